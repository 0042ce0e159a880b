"""A crafted checkpoint runs no code: every tool that reads one refuses it in one line.

Each checkpoint here pickles an object whose `__reduce__` calls `Path.touch(marker)`: if any
reader unpickled it without restriction, the marker file would exist. The crafted files are the
real formats with one object added: a `.ckpt` from `torch.save`, and sharded folders written by
torch.distributed.checkpoint (DCP) as Lightning's FSDPStrategy writes them (a `.metadata` pickle,
`__0_0.distcp` shards with tensors and pickled plain values, and Lightning's `meta.pt`).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch import nn

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model, resolve_ckpt_path
from lmtrain.strategies import consolidate
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from lmtrain.utils.safe_load import SafeFileSystemReader, load_dcp_folder, refused_global
from lmtrain.utils.sharded_layout import SHARDED_META_FILE
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import build_tokenizer
from tests.helpers.sharded_runs import lightning_meta, model_and_optimizer

# Makes torch.load default to unrestricted unpickling where a caller leaves weights_only unset.
NO_WEIGHTS_ONLY = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


class Payload:
    """Pickles as a call to `Path.touch(marker)`: the marker exists iff something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def by_name(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, as FSDP's `optim_state_dict` gives it."""
    names = [name for name, _ in model.named_parameters()]
    state = optimizer.state_dict()
    groups = [
        {**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]
    ]
    return {"state": {names[i]: s for i, s in state["state"].items()}, "param_groups": groups}


def sharded_folder(folder: Path, extra_param_group: dict | None = None) -> Path:
    """A checkpoint folder laid out as FSDPStrategy(state_dict_type="sharded") writes one."""
    model, optimizer = model_and_optimizer()
    state = {"model": model.state_dict(), "optimizer_0": by_name(model, optimizer)}
    state["optimizer_0"]["param_groups"][0].update(extra_param_group or {})
    dcp.save(state, checkpoint_id=folder, no_dist=True)
    torch.save(lightning_meta(7), folder / SHARDED_META_FILE)
    return folder


def crafted_metadata(folder: Path, marker: Path) -> Path:
    """A real sharded folder whose `.metadata` pickle also holds the payload."""
    sharded_folder(folder)
    metadata = SafeFileSystemReader(folder).read_metadata()
    metadata.storage_meta.modules = [Payload(marker)]
    (folder / ".metadata").write_bytes(pickle.dumps(metadata))
    return folder


def crafted_entry(folder: Path, marker: Path) -> Path:
    """A real sharded folder whose shard file holds the payload as a plain (non-tensor) value,
    pickled there by DCP itself; its `.metadata` is genuine."""
    return sharded_folder(folder, {"lr": Payload(marker)})


def crafted_ckpt(path: Path, marker: Path) -> Path:
    """A genuine torch.save zip with the payload nested in the checkpoint dict."""
    torch.save({"state_dict": {}, "global_step": 1, "extra": [{"x": Payload(marker)}]}, path)
    return path


def assert_refused(result, path: Path, marker: Path) -> None:
    """Non-zero exit, exactly one `error:` line naming `path`, no traceback, no code run."""
    line = assert_one_line_error(result, str(path), "could run code")
    assert "\x1b" not in line  # torch's own message carries terminal escapes
    assert not marker.exists()


class BlockedModulePayload:
    """Pickles as a call to `os.system`: torch refuses the module itself, in other words."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("true",))


def test_a_global_of_a_blocked_module_is_named_without_torchs_advice(tmp_path: Path) -> None:
    """torch's refusal advises loading with weights_only=False (running the code): the line
    lmtrain prints keeps only what was refused, for blocked modules too."""
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "x": BlockedModulePayload()}, path)
    with pytest.raises(pickle.UnpicklingError) as caught:
        torch.load(path, weights_only=True)
    refusal = refused_global(caught.value)
    assert refusal is not None and "GLOBAL" in refusal and "system" in refusal
    assert "weights_only" not in refusal


def test_crafted_ckpt_is_refused_by_train_eval_generate_and_export(
    tmp_path: Path, data_dir: Path
) -> None:
    marker = tmp_path / "ran"
    ckpt = crafted_ckpt(tmp_path / "crafted.ckpt", marker)
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    runs = {
        "train": (*tiny_cli(tmp_path, data_dir, f"ckpt_path={ckpt}", "logger=none"),),
        "eval": (f"ckpt_path={ckpt}", logs),
        "generate": (f"ckpt_path={ckpt}", "prompt=x", logs),
        "export": (f"ckpt_path={ckpt}", f"out_dir={tmp_path / 'hf'}", logs),
    }

    def run(module: str):  # unrestricted unpickling as torch's default: only explicit loads hold
        return run_cli(module, *runs[module], env=NO_WEIGHTS_ONLY, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:  # ~10 s of startup each, two at a time
        results = dict(zip(runs, pool.map(run, runs), strict=True))
    for module, result in results.items():
        assert "crafted.ckpt' holds pickled objects" in result.stderr, module
        assert_refused(result, ckpt, marker)
    assert not (tmp_path / "hf").exists()


def test_crafted_sharded_folders_are_refused_by_consolidate_and_train(
    tmp_path: Path, data_dir: Path
) -> None:
    marker = tmp_path / "ran"
    by_metadata = crafted_metadata(tmp_path / "metadata" / "last.ckpt", marker)
    by_entry = crafted_entry(tmp_path / "entry" / "last.ckpt", marker)
    consolidate_cmd = [sys.executable, "-m", "lmtrain.strategies", "consolidate"]
    fsdp = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1", "logger=none"]
    runs = {
        "consolidate .metadata": [*consolidate_cmd, str(by_metadata)],
        "consolidate entry": [*consolidate_cmd, str(by_entry)],
        "train .metadata": [
            "train",
            *tiny_cli(tmp_path, data_dir, *fsdp),
            f"ckpt_path={by_metadata}",
        ],
    }

    def run(name: str):
        if name.startswith("train"):
            return run_cli(*runs[name], env=NO_WEIGHTS_ONLY, timeout=300)
        env = {**os.environ, **NO_WEIGHTS_ONLY}
        return subprocess.run(
            runs[name], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(runs, pool.map(run, runs), strict=True))
    assert_refused(results["consolidate .metadata"], by_metadata / ".metadata", marker)
    assert "unsupported global pathlib.Path.touch" in results["consolidate .metadata"].stderr
    assert_refused(results["consolidate entry"], by_entry, marker)
    assert "entry optimizer_0.param_groups.0.lr" in results["consolidate entry"].stderr
    assert_refused(results["train .metadata"], by_metadata / ".metadata", marker)
    assert not list(tmp_path.glob("*/last.consolidated.ckpt*"))

    # train's pre-check reads the folder as consolidate does, before Lightning's FSDP load would.
    with pytest.raises(LMTrainError, match=r"entry optimizer_0\.param_groups\.0\.lr: Unsupported"):
        resolve_ckpt_path(str(by_entry), tmp_path)
    assert not marker.exists()


def test_meta_pt_and_resume_loads_stay_weights_only_when_torch_is_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "ran"
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    folder = sharded_folder(tmp_path / "last.ckpt")
    crafted_ckpt(folder / SHARDED_META_FILE, marker)
    with pytest.raises(LMTrainError, match=r"meta.pt' holds pickled objects .* could run code"):
        consolidate(folder)
    assert not marker.exists()

    # What trainer.fit(ckpt_path=...) calls to read a .ckpt: Lightning passes weights_only=None.
    ckpt = crafted_ckpt(tmp_path / "crafted.ckpt", marker)
    with pytest.raises(LMTrainError, match=r"crafted.ckpt' holds pickled objects"):
        AtomicCheckpointIO().load_checkpoint(ckpt)
    assert not marker.exists()


def test_exported_folder_with_a_crafted_bin_is_refused(tmp_path: Path) -> None:
    from transformers import GPT2Config

    marker = tmp_path / "ran"
    folder = tmp_path / "export"
    GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=16).save_pretrained(folder)
    build_tokenizer("char", ["an export's tokenizer"]).save_pretrained(folder)  # all but weights
    crafted_ckpt(folder / "pytorch_model.bin", marker)
    with pytest.raises(LMTrainError, match=r"export' holds pickled objects .* could run code"):
        load_model(folder)
    assert not marker.exists()


def test_genuine_sharded_checkpoint_with_optimizer_state_consolidates(tmp_path: Path) -> None:
    folder = sharded_folder(tmp_path / "last.ckpt")
    model, optimizer = model_and_optimizer()
    merged = torch.load(consolidate(folder), weights_only=True)
    assert merged["global_step"] == 7
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(merged["state_dict"][name], tensor, msg=name)
    (saved,) = merged["optimizer_states"]
    expected = by_name(model, optimizer)
    assert saved["param_groups"] == expected["param_groups"]  # plain values: pickled entries
    assert saved["state"].keys() == expected["state"].keys()
    for name, state in expected["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(saved["state"][name][key], value, msg=f"{name}.{key}")
    # The same folder is a valid resume target for train.
    assert resolve_ckpt_path(str(folder), tmp_path) == str(folder)


# One rank of a 2-process FSDP2 save (fully_shard, gloo on CPU) of a model and its AdamW state;
# a bare interpreter, as importing lmtrain in each rank would cost ~10 s.
FSDP2_RANK = """
import sys
import torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.fsdp import fully_shard

folder, store, rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
torch.manual_seed(0)
model = fully_shard(nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.randn(2, 8)).sum().backward()
optimizer.step()
model_state, optimizer_state = get_state_dict(model, optimizer)
dcp.save({"model": model_state, "optim": optimizer_state, "step": 5}, checkpoint_id=folder)
dist.destroy_process_group()
"""


def walk(tree: Any, prefix: str = ""):
    """(dotted key, leaf) pairs of a nested dict."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from walk(value, f"{prefix}{key}.")
    else:
        yield prefix, tree


def test_dcp_folder_sharded_by_two_fsdp2_ranks_loads_whole_through_the_safe_reader(
    tmp_path: Path,
) -> None:
    folder, store = tmp_path / "fsdp2", str(tmp_path / "store")  # the ranks meet through a file
    ranks = [
        subprocess.Popen([sys.executable, "-c", FSDP2_RANK, str(folder), store, str(rank)])
        for rank in (0, 1)
    ]
    try:
        assert [rank.wait(timeout=120) for rank in ranks] == [0, 0]
    finally:  # a rank left waiting for a dead one would wait for gloo's 30 minutes
        for rank in ranks:
            rank.kill()
    assert {p.name for p in folder.iterdir()} >= {".metadata", "__0_0.distcp", "__1_0.distcp"}
    # torch's own conversion (its reader and planner unpickle freely; fine on our own file).
    reference = tmp_path / "reference.pt"
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(folder, reference)
    expected = torch.load(reference, weights_only=True)
    loaded = load_dcp_folder(folder)
    assert loaded["step"] == 5
    assert loaded["optim"]["param_groups"] == expected["optim"]["param_groups"]
    flat = dict(walk(loaded))
    assert flat.keys() == dict(walk(expected)).keys()
    for key, value in walk(expected):
        if isinstance(value, torch.Tensor):
            assert value.shape == flat[key].shape and torch.equal(value, flat[key]), key
    assert loaded["model"]["0.weight"].shape == (16, 8)  # whole, not one rank's half
