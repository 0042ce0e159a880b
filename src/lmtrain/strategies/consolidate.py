"""A sharded checkpoint folder merged into the one `.ckpt` file a one-device run reads.

`lmtrain.eval`, `lmtrain.generate` and `lmtrain.export` read one file, and so does
`trainer.fit(ckpt_path=...)` on one device or under DDP. The folder is read in one process on
CPU, whatever the number of ranks that wrote it, through the restricted reader of
`lmtrain.utils.safe_load`; it needs memory for the whole checkpoint, not the GPUs that wrote it.

Two layouts are read:

- `trainer=fsdp` (FSDP2 through Lightning's ModelParallelStrategy): entries `state_dict` and
  `optimizer_<i>`, the optimizer state keyed by parameter name. A one-device checkpoint keys it
  by position over the parameter groups (torch's `Optimizer.state_dict`): it is re-keyed so.
- the FSDP1 strategy of earlier versions: entries `model` and `optimizer_<i>`, laid out as
  Lightning's own consolidation does (the optimizer state stays keyed by name).

Every file of the folder is compared with the checksum written with it before it is merged
(`lmtrain.utils.shard_digest`), and the merged file carries the digest of its tensors that every
lmtrain reader checks (`lmtrain.utils.tensor_digest`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from lmtrain.errors import LMTrainError
from lmtrain.lightning_compat import format_consolidated_checkpoint
from lmtrain.utils.checkpoint_io import checkpoint_full_disk_error
from lmtrain.utils.io import atomic_write
from lmtrain.utils.safe_load import load_dcp_folder, load_torch_file
from lmtrain.utils.shard_digest import SHARD_DIGESTS_KEY
from lmtrain.utils.sharded_layout import (
    DCP_METADATA_FILE,
    SHARDED_META_FILE,
    is_sharded_checkpoint,
)
from lmtrain.utils.tensor_digest import DIGEST_KEY, add_digest

NOT_OURS = "pass a checkpoint folder written by trainer=fsdp, e.g. <run>/checkpoints/last.ckpt"
# What a folder that may not be written says: its permissions, or a read-only file system
# (which refuses root too).
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def consolidate(
    folder: str | Path, output: str | Path | None = None, overwrite: bool = False
) -> Path:
    """Merge the sharded checkpoint `folder` into one `.ckpt` file; return its path.

    `output` defaults to `<folder>.consolidated.ckpt` beside the folder (for `last.ckpt/`,
    `last.consolidated.ckpt`). The file is written to a temporary name and renamed. An existing
    `output` is another run's checkpoint as often as an older consolidation of this one, so it
    is replaced only with `overwrite`; everything is checked before the shards are read, the
    shards' checksums before they are merged.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise LMTrainError(f"{str(folder)!r} does not exist: {NOT_OURS}")
    if not is_sharded_checkpoint(folder):
        raise LMTrainError(
            f"{str(folder)!r} is not a sharded checkpoint folder (no {SHARDED_META_FILE}): "
            f"{NOT_OURS}"
        )
    if output is None:
        output = folder.with_name(f"{folder.name.removesuffix('.ckpt')}.consolidated.ckpt")
    output = Path(output).expanduser()
    check_output(output, overwrite, folder)
    meta = load_torch_file(folder / SHARDED_META_FILE)  # all but the tensors; small, so first
    if not isinstance(meta, dict):
        raise LMTrainError(
            f"{str(folder)!r} has a {SHARDED_META_FILE} that is not a dict: {NOT_OURS}"
        )
    for key in (SHARD_DIGESTS_KEY, DIGEST_KEY):  # the folder's own; the merged file gets its own
        meta.pop(key, None)
    entries = load_dcp_folder(folder)  # every file compared with its checksum first
    for name, entry in entries.items():  # DCP keeps no empty entry: an optimizer not yet stepped
        if name.startswith("optimizer_") and isinstance(entry, dict):
            entry.setdefault("state", {})
    if "state_dict" in entries:
        checkpoint = one_device_layout(entries, meta)
    elif "model" in entries:
        checkpoint = format_consolidated_checkpoint({**entries, **meta})
    else:
        raise LMTrainError(
            f"{str(folder)!r} holds no model weights (no state_dict or model entry): {NOT_OURS}"
        )
    add_digest(checkpoint)  # checked by every reader of the merged file
    try:
        with atomic_write(output, "wb") as f:  # a reader never sees half a checkpoint
            torch.save(checkpoint, f)
    except (OSError, RuntimeError) as err:
        if isinstance(err, OSError) and err.errno in NOT_WRITABLE:
            raise not_writable(output, err.errno) from None
        fix = "pass --output <a file on a disk with room>"
        if (refusal := checkpoint_full_disk_error(output, err, fix=fix)) is None:
            raise
        raise refusal from None
    return output


def check_output(output: Path, overwrite: bool, folder: Path) -> None:
    """Refuse an `output` inside a sharded checkpoint folder (the one merged or any other), one
    that is a folder, an existing file without `overwrite`, or one in a folder this process may
    not write (checked on the nearest folder that exists: the write creates the missing ones)."""
    beside = folder.with_name(f"{folder.name.removesuffix('.ckpt')}.consolidated.ckpt")
    if (holder := sharded_folder_holding(output)) is not None:
        # The run's next save replaces a sharded folder whole (a file in it went with it, the
        # best-* one included when a better one replaced it), and --overwrite onto a shard or
        # its .metadata destroyed that checkpoint (red team).
        merged = holder == folder.resolve()
        shown = folder if merged else holder
        where = "beside it" if merged else "outside it"
        raise LMTrainError(
            f"the output {str(output)!r} is inside the sharded checkpoint {str(shown)!r}, "
            f"which the run's next save replaces whole: pass a file {where}, e.g. "
            f"--output {str(beside)!r} (the default)"
        )
    if output.is_dir():  # not a sharded folder nor in one (above): a file in it stays
        raise LMTrainError(
            f"the output {str(output)!r} is a folder: pass a file path to --output, e.g. "
            f"{str(output / 'consolidated.ckpt')!r}"
        )
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise LMTrainError(
            f"{str(output)!r} already exists: pass another --output, or add --overwrite to "
            "replace it"
        )
    folder = next(p for p in output.absolute().parents if p.exists())
    if not folder.is_dir():  # a file where a folder of the path should be
        raise not_writable(output, errno.ENOTDIR)
    # access(2) refuses root too on a read-only file system (EROFS).
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and os.statvfs(folder).f_flag & os.ST_RDONLY
        raise not_writable(output, errno.EROFS if read_only else errno.EACCES)


def sharded_folder_holding(output: Path) -> Path | None:
    """The sharded checkpoint folder that `output` is, or lies in (symbolic links followed),
    else None. Known by Lightning's `meta.pt` or DCP's `.metadata`: a folder that a save is
    still writing, or one missing its meta.pt, is replaced whole all the same."""
    target = output.resolve()
    for path in (target, *target.parents):
        try:
            # DCP's own file, or lmtrain's meta.pt beside shards: not any file named meta.pt
            if (path / DCP_METADATA_FILE).is_file() or (
                (path / SHARDED_META_FILE).is_file() and any(path.glob("*.distcp"))
            ):
                return path
        except OSError:  # unreadable: nothing of a checkpoint seen there
            continue
    return None


def not_writable(output: Path, code: int) -> LMTrainError:
    """The line for an `output` that its folder refuses (`code`: the errno)."""
    return LMTrainError(
        f"cannot write {output} ({os.strerror(code)}): pass --output <a writable file>"
    )


def one_device_layout(entries: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """An FSDP2 folder's entries and meta.pt as a one-device Lightning checkpoint."""
    optimizers = []
    while f"optimizer_{len(optimizers)}" in entries:
        optimizers.append(keyed_by_position(entries.pop(f"optimizer_{len(optimizers)}")))
    return {**meta, "state_dict": entries.pop("state_dict"), "optimizer_states": optimizers}


def keyed_by_position(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state keyed by parameter name (torch.distributed's `get_optimizer_state_dict`)
    keyed as torch's `Optimizer.state_dict` keys it: the position of each parameter over the
    parameter groups, in order. `Optimizer.load_state_dict` maps positions back to parameters."""
    position: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = [position.setdefault(name, len(position)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {position[k]: v for k, v in state["state"].items()}, "param_groups": groups}
