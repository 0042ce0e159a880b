"""A resumed run that had already ended (`callbacks/ended_run.py`): at `max_steps`, or stopped
by EarlyStopping. `resume=` of it (as `resume=latest` or a requeued job may do) trains, validates
and writes nothing more: its metrics.json, samples, CSV rows and checkpoints stay as they were.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import torch

from tests.helpers.cli import run_cli, tiny_cli

EARLY_STOP = [
    "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.early_stopping.monitor=val/loss",
    "+callbacks.early_stopping.stopping_threshold=100.0",  # met at the first validation
    "+callbacks.early_stopping.check_on_train_epoch_end=false",
]


def snapshot(run: Path) -> dict[str, object]:
    """What a resume must leave as it was: the reports, samples, CSV rows and checkpoints."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return {
        "metrics.json": (run / "metrics.json").read_text(),
        "samples.txt": (run / "samples.txt").read_text(),
        "rows": rows,
        "checkpoints": sorted(p.name for p in (run / "checkpoints").iterdir()),
        "step": last["global_step"],
    }


def test_resuming_a_run_that_reached_max_steps_changes_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    first = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}"))
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(run)
    resumed = run_cli("train", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "had ended at step 4" in resumed.stdout + resumed.stderr
    assert snapshot(run) == before


def test_resuming_a_run_early_stopping_ended_trains_no_further(
    tmp_path: Path, data_dir: Path
) -> None:
    """Lightning restores EarlyStopping's state but not its stop: the resumed run trained on
    to the next validation and replaced the run's best checkpoint, metrics and samples."""
    run = tmp_path / "run"
    longer = ["trainer.max_steps=20", "logger=csv", f"hydra.run.dir={run}", *EARLY_STOP]
    first = run_cli("train", *tiny_cli(tmp_path, data_dir, *longer))
    assert first.returncode == 0, first.stderr[-3000:]
    before = snapshot(run)
    assert before["step"] == 2, before["step"]  # stopped at the first validation
    resumed = run_cli("train", f"resume={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "EarlyStopping had ended this run at step 2" in output, output[-3000:]
    assert snapshot(run) == before
    # Resumed with a longer run (its schedule resized): nothing trains, so no new optimizer
    # setting is said to apply (red team rev_combo30: "this run's config applies: ... rate").
    again = [o.replace("max_steps=20", "max_steps=40") for o in longer]
    again.append("model.scheduler.num_warmup_steps=1")  # the run's warm-up outlasted step 2
    longer_run = run_cli("train", *tiny_cli(tmp_path, data_dir, *again), "ckpt_path=last")
    assert longer_run.returncode == 0, longer_run.stderr[-3000:]
    output = longer_run.stdout + longer_run.stderr
    assert "EarlyStopping had ended this run at step 2" in output, output[-3000:]
    assert "this run's config applies" not in output, output[-3000:]
    assert snapshot(run) == before


def test_a_replaced_runs_metrics_json_does_not_stand_for_the_new_run(
    tmp_path: Path, data_dir: Path
) -> None:
    """Red team: run 2 (overwrite_run=true, another lr) killed in its final validation, at the
    step run 1 had ended at; its resume took run 1's metrics.json as its own end, exit code 0,
    and export put run 1's val loss into the model card."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}")
    first = run_cli("train", *cli)
    assert first.returncode == 0, first.stderr[-3000:]
    first_metrics = json.loads((run / "metrics.json").read_text())
    kill = "+callbacks.kill._target_=tests.helpers.faults.KillInFinalValidation"
    second = [*cli, "overwrite_run=true", "model.optimizer.lr=1e-2"]
    killed = run_cli("train", *second, kill, fresh=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run / "metrics.json").exists()  # run 1's went at run 2's first save
    resumed = run_cli("train", *second, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "its metrics.json stands" not in resumed.stdout + resumed.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == first_metrics["trainer/global_step"]
    assert metrics["val/loss"] != first_metrics["val/loss"]  # run 2's own weights, validated
