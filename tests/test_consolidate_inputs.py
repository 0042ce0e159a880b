"""What `python -m lmtrain.strategies consolidate` refuses, and the FSDP settings that
`trainer=fsdp_cpu` refuses before any rank starts: one `error:` line each, nothing overwritten.

The sharded folder is written in this process with torch's distributed checkpoint, in the layout
`trainer=fsdp` writes (`state_dict`, `optimizer_0` keyed by parameter name, `meta.pt`): the same
files a two-rank run leaves, without its minute of training.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from lmtrain.utils.sharded_layout import SHARDED_META_FILE
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.sharded_runs import model_and_optimizer


def sharded_checkpoint(folder: Path) -> Path:
    """`folder` as trainer=fsdp writes a checkpoint (at global step 7)."""
    model, optimizer = model_and_optimizer()
    names = [name for name, _ in model.named_parameters()]
    state = optimizer.state_dict()
    by_name = {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [
            {**group, "params": [names[i] for i in group["params"]]}
            for group in state["param_groups"]
        ],
    }
    dcp.save(
        {"state_dict": model.state_dict(), "optimizer_0": by_name},
        checkpoint_id=folder,
        no_dist=True,
    )
    torch.save({"global_step": 7, "epoch": 0}, folder / SHARDED_META_FILE)
    return folder


def consolidate_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("strategies", "consolidate", *map(str, args), timeout=120)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_existing_output_is_refused_and_kept_unless_overwrite(tmp_path: Path) -> None:
    folder = sharded_checkpoint(tmp_path / "fsdp_run" / "last.ckpt")
    other_run = tmp_path / "other_run" / "last.ckpt"  # another run's checkpoint, never ours
    other_run.parent.mkdir()
    torch.save({"global_step": 99, "state_dict": {}}, other_run)
    before = digest(other_run)

    refused = consolidate_cli(folder, "--output", other_run)
    assert refused.returncode == 1
    assert_one_line_error(
        refused, f"'{other_run}' already exists: pass another --output", "--overwrite"
    )
    assert digest(other_run) == before and sorted(other_run.parent.iterdir()) == [other_run]

    # The default output (last.consolidated.ckpt) is not replaced silently either.
    assert consolidate_cli(folder).returncode == 0
    default = folder.with_name("last.consolidated.ckpt")
    default_before = digest(default)
    again = consolidate_cli(folder)
    assert_one_line_error(again, f"'{default}' already exists")
    assert digest(default) == default_before

    replaced = consolidate_cli(folder, "--output", other_run, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert replaced.stdout.strip() == str(other_run)
    merged = torch.load(other_run, map_location="cpu", weights_only=True)
    model, _ = model_and_optimizer()
    assert merged["global_step"] == 7 and len(merged["optimizer_states"]) == 1
    assert merged["state_dict"].keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(merged["state_dict"][name], tensor, rtol=0, atol=0)
    assert "--overwrite" in consolidate_cli("--help").stdout


def test_output_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    folder = sharded_checkpoint(tmp_path / "last.ckpt")
    shards = sorted(p.name for p in folder.iterdir())
    out = consolidate_cli(folder, "--output", tmp_path)
    assert_one_line_error(out, f"the output '{tmp_path}' is a folder: pass a file path to --output")
    assert sorted(p.name for p in folder.iterdir()) == shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_output_inside_the_sharded_folder_is_refused(tmp_path: Path) -> None:
    """Red team: the folder's own hint put the output inside it, where the run's next save
    deleted it with the folder; `--output <a shard> --overwrite` destroyed the checkpoint."""
    folder = sharded_checkpoint(tmp_path / "last.ckpt")
    before = {p.name: digest(p) for p in folder.iterdir()}
    shard = next(folder.glob("*.distcp"))
    for output, extra in (
        (folder, ()),
        (folder / "consolidated.ckpt", ()),
        (shard, ("--overwrite",)),
    ):
        out = consolidate_cli(folder, "--output", output, *extra)
        assert_one_line_error(
            out,
            f"the output '{output}' is inside the sharded checkpoint '{folder}', which the run's "
            f"next save replaces whole: pass a file beside it, e.g. --output "
            f"'{tmp_path / 'last.consolidated.ckpt'}' (the default)",
        )
    assert {p.name: digest(p) for p in folder.iterdir()} == before


def test_missing_input_is_named_as_missing(tmp_path: Path) -> None:
    missing = tmp_path / "no_run" / "last.ckpt"
    out = consolidate_cli(missing, "--output", tmp_path / "merged.ckpt")
    assert out.returncode == 1
    assert_one_line_error(out, f"'{missing}' does not exist: pass a checkpoint folder")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["trainer.strategy.timeout_s=-5"], ["trainer.strategy.timeout_s=-5 must be positive"]),
        (
            ["trainer.strategy.process_group_backend=nccl"],
            ["process_group_backend='nccl': nccl is not available", "pass gloo"],
        ),
        (
            [
                "trainer.strategy.timeout_s=abc",
                "trainer.strategy.reshard_after_forward=maybe",
                "trainer.strategy.activation_checkpointing=no",
            ],
            [
                "3 settings need a change",
                "timeout_s='abc' is not a finite number",
                "reshard_after_forward='maybe' is not true or false",
                "activation_checkpointing='no' is not true or false",
            ],
        ),
    ],
    ids=["negative-timeout", "nccl-on-cpu", "abc-timeout-and-string-booleans"],
)
def test_bad_fsdp_settings_stop_before_any_rank_starts(
    tmp_path: Path, data_dir: Path, overrides: list[str], fragments: list[str]
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer=fsdp_cpu", "logger=none", *overrides)
    out = run_cli("train", *cli, f"hydra.run.dir={run}", timeout=300)
    assert out.returncode == 1
    assert_one_line_error(out, *fragments)
    assert "Initializing distributed" not in out.stdout + out.stderr
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("command", ["eval", "export"])
def test_one_shard_given_as_ckpt_path_names_its_folder(tmp_path: Path, command: str) -> None:
    """Red team: a shard read as a damaged zip file ("your checkpoint file is corrupted")."""
    folder = sharded_checkpoint(tmp_path / "last.ckpt")
    shard = next(folder.glob("*.distcp"))
    extra = [f"out_dir={tmp_path / 'export'}"] if command == "export" else []
    out = run_cli(command, f"ckpt_path={shard}", f"hydra.run.dir={tmp_path / 'run'}", *extra)
    assert_one_line_error(
        out,
        f"ckpt_path='{shard}' is no checkpoint on its own: it is one file of the sharded "
        f"checkpoint {folder} (trainer=fsdp): pass the folder to resume with trainer=fsdp, or "
        f"merge it into one file for eval, generate and export with `python -m "
        f"lmtrain.strategies consolidate {folder}`",
    )
    assert "corrupted" not in out.stderr
