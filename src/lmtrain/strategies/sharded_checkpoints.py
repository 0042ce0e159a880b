"""Checkpoints of a sharded model: folders written with a checksum of each file, replaced
atomically, and read without unpickling.

A sharded checkpoint is a torch.distributed.checkpoint (DCP) folder: every rank writes its
shards of the weights and optimizer state (`__<rank>_0.distcp`), rank 0 the `.metadata` and
`meta.pt` (Lightning's loops and callbacks, our extras, and the checksums of the other files:
`write_sharded`, in the layout of Lightning's ModelParallelStrategy). Lightning writes it in
place, so a kill mid-save would leave half a folder where the last good one was;
`FSDP2Strategy.save_checkpoint` writes it to `.<name>.tmp` and then calls `replace_folder` (see
`lmtrain.models.checkpoint` for the names).

Lightning also reads it with torch's own reader, which unpickles `.metadata` and every
non-tensor entry without restriction; `load_sharded` reads it with `SafeFileSystemReader` and
`SafeLoadPlanner` instead, and `meta.pt` with weights-only loading, once every file matched its
checksum. `load_full_file` reads a one-file checkpoint (DDP, one device, a consolidated folder)
into the sharded model.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.api import CheckpointException
from torch.optim import Optimizer

from lmtrain.models.checkpoint_paths import previous_sharded
from lmtrain.utils import shard_digest
from lmtrain.utils.io import fsync_dir
from lmtrain.utils.safe_load import (
    SafeFileSystemReader,
    SafeLoadPlanner,
    checkpoint_error,
    load_torch_file,
    read_dcp_folder_metadata,
    recorded_digests,
)
from lmtrain.utils.sharded_layout import SHARDED_META_FILE
from lmtrain.utils.tensor_digest import add_digest


def write_sharded(checkpoint: dict[str, Any], folder: Path, target: Path, rank: int) -> None:
    """Every rank: write `checkpoint` into the new folder `folder` (to become `target`).

    As Lightning's ModelParallelStrategy writes it (DCP entries `state_dict` and `optimizer_<i>`,
    the rest in `meta.pt` by rank 0), with the size and digest of each file DCP wrote in
    `meta.pt` and a digest of its own tensors (RNG states), both checked by every reader.
    Hashing costs each rank about a second per GB of its own shards (`lmtrain.utils.shard_digest`).
    """
    import torch.distributed.checkpoint as dcp

    state = {"state_dict": checkpoint.pop("state_dict")}
    for index, optimizer_state in enumerate(checkpoint.pop("optimizer_states", [])):
        state[f"optimizer_{index}"] = optimizer_state
    folder.mkdir(parents=True, exist_ok=True)
    dcp.save(state, checkpoint_id=folder)  # returns on every rank once .metadata is written
    digests = shard_digest.record(folder, target)
    if rank == 0:
        checkpoint[shard_digest.SHARD_DIGESTS_KEY] = digests
        add_digest(checkpoint)
        torch.save(checkpoint, folder / SHARDED_META_FILE)


def replace_folder(tmp: Path, path: Path) -> None:
    """Put the complete folder `tmp` in the place of `path` (rank 0, after every rank wrote).

    Two renames, with the previous checkpoint kept aside until the new one is in place: at any
    moment a complete checkpoint is at `path`, or (between the renames) at
    `previous_sharded(path)`, where `ckpt_path=last` looks too. A previous copy left by a save
    killed between the renames is the only good one until `tmp` is in place.
    """
    old = previous_sharded(path)
    if path.exists() or path.is_symlink():
        remove_path(old)
        path.rename(old)
    tmp.rename(path)
    remove_path(old)
    fsync_dir(path.parent)


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def load_sharded(
    module: nn.Module, optimizers: Sequence[Optimizer], path: Path, strict: bool
) -> dict[str, Any]:
    """Load the sharded checkpoint `path` into `module` (sharded) and `optimizers`; return the
    rest of the checkpoint (meta.pt). What Lightning's `_load_checkpoint` does for a folder,
    through the restricted reader; the folder may have been written by any number of ranks.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    def read(state: dict[str, Any]) -> None:
        try:
            dcp.load(state, storage_reader=SafeFileSystemReader(path), planner=SafeLoadPlanner())
        except CheckpointException as err:  # a BaseException: it holds each rank's exception
            cause = next(iter(err.failures.values()))[0]
            raise checkpoint_error(path, cause, "DCP checkpoint") from None

    entries = read_dcp_folder_metadata(path).state_dict_metadata
    # Every rank hashes its share of the files; a damaged one stops all of them together.
    shard_digest.verify(path, recorded_digests(path), on_ranks=True)
    # Earlier versions' FSDP1 strategy named the weights "model"; FSDP2 folders "state_dict".
    key = "model" if any(name.startswith("model.") for name in entries) else "state_dict"
    weights = {key: get_model_state_dict(module)}
    read(weights)
    module.load_state_dict(weights[key], strict=strict)
    for index, optimizer in enumerate(optimizers):
        name = f"optimizer_{index}"
        state = {name: get_optimizer_state_dict(module, optimizer)}
        read(state)
        set_optimizer_state_dict(
            module, optimizer, state[name], options=StateDictOptions(cpu_offload=True)
        )
    meta = load_torch_file(path / SHARDED_META_FILE)
    if isinstance(meta, dict):
        meta.pop(shard_digest.SHARD_DIGESTS_KEY, None)
    return meta


def load_full_file(
    module: nn.Module, optimizers: Sequence[Optimizer], path: Path, strict: bool
) -> dict[str, Any]:
    """Load a one-file checkpoint into the sharded `module` and `optimizers`; return the rest.

    Every rank memory-maps the file; rank 0's tensors are broadcast, one at a time, and each
    rank keeps its shard. The optimizer state of a one-file checkpoint is keyed by position over
    the parameter groups; it is re-keyed by name here. (Lightning maps position i to the i-th of
    `module.parameters()` instead, which puts the state of one parameter on another as soon as
    there are two groups, decay and no decay.)
    """
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    checkpoint = load_torch_file(path)
    broadcast = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=strict)
    set_model_state_dict(module, checkpoint.pop("state_dict"), options=broadcast)
    states = checkpoint.pop("optimizer_states", [])
    for optimizer, state in zip(optimizers, states, strict=False):
        groups = get_optimizer_state_dict(module, optimizer)["param_groups"]
        names = [name for group in groups for name in group["params"]]
        set_optimizer_state_dict(module, optimizer, keyed_by_name(state, names), options=broadcast)
    return checkpoint


def keyed_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """A one-device optimizer state (keyed by position over the parameter groups, or already by
    name) keyed by `names`, the parameter names over the same groups in order."""
    saved = [key for group in state["param_groups"] for key in group["params"]]
    if not all(isinstance(key, int) for key in saved):
        return state
    name_of = dict(zip(saved, names, strict=True))
    groups = [{**g, "params": [name_of[k] for k in g["params"]]} for g in state["param_groups"]]
    return {"state": {name_of[k]: v for k, v in state["state"].items()}, "param_groups": groups}
