"""`time/train_s` in metrics.json: the training time of the whole run, summed over the processes
that resumed it, each up to the checkpoint the next one resumed from (`TrainingTotals`).

A real run is resumed with more steps from its real last.ckpt; the resume reads that checkpoint
from slow storage, and restoring is not training: `time/train_s` grows by what the resumed
process trained, not by its wait for the checkpoint. Likewise the throughput monitor's
`train/time` (tokens/s, MFU) leaves out validations and the work that follows them.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.callbacks.throughput import TokenThroughputMonitor
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from tests.helpers.cli import run_cli, tiny_cli

# Longer than the resumed training (4 tiny steps, validations, saves) takes on a busy machine.
SLOW_LOAD_S = 12.0


class SlowLoadCheckpointIO(AtomicCheckpointIO):
    """Our atomic CheckpointIO that reads a checkpoint `delay_s` late, as slow storage does."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__()
        self.delay_s = delay_s

    def load_checkpoint(self, path: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        time.sleep(self.delay_s)
        return super().load_checkpoint(path, *args, **kwargs)


def saved_train_seconds(checkpoint: Path) -> float:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    (totals,) = [v for k, v in state["callbacks"].items() if "TrainingTotals" in k]
    return float(totals["train_seconds"])


def last_train_time(run_dir: Path) -> float:
    """The throughput monitor's `train/time` of the last logged step: seconds since the training
    of the process that logged it began (its own process only)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/time")]
    return float(rows[-1]["train/time"])


@pytest.mark.slow
def test_resumed_run_adds_its_training_and_not_its_restoring(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    command = [*tiny_cli(tmp_path, data_dir, "logger=csv"), f"hydra.run.dir={run_dir}"]
    first = run_cli("train", *command)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = saved_train_seconds(run_dir / "checkpoints" / "last.ckpt")
    first_s = json.loads((run_dir / "metrics.json").read_text())["time/train_s"]
    assert 0 < saved <= first_s

    slow = f"trainer.plugins=[{{_target_:{__name__}.SlowLoadCheckpointIO,delay_s:{SLOW_LOAD_S}}}]"
    started = time.perf_counter()
    resumed = run_cli("train", *command, "ckpt_path=last", "trainer.max_steps=8", slow)
    wall = time.perf_counter() - started
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 8

    # Cumulative: the first process's seconds up to its checkpoint, and the resumed one's.
    this_process = metrics["time/train_s"] - saved
    # The resumed process trained 4 steps (its own train/time, counted from its training's
    # start, is a lower bound); the wait for the checkpoint is not in it (it was, in full).
    assert last_train_time(run_dir) - 0.1 <= this_process < SLOW_LOAD_S, (this_process, wall)
    assert this_process < wall - SLOW_LOAD_S


# Longer than 8 tiny training steps take on a busy machine.
SLOW_VALIDATION_S = 5.0


class SlowValidation(Callback):
    """Work after a validation that takes long, as text samples and checkpoint saves can."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            time.sleep(SLOW_VALIDATION_S)


def test_throughput_leaves_validations_and_their_work_out(tmp_path: Path, data_dir: Path) -> None:
    """`train/time` (and the tokens/s and MFU computed from it) counted the validation after
    step 4 and the work after it as training: the window after each validation read slow."""
    run_dir = tmp_path / "run"
    slow = f"+callbacks.slow_validation._target_={__name__}.SlowValidation"
    steps = ["trainer.max_steps=8", "trainer.val_check_interval=4"]
    overrides = [*steps, "logger=csv", f"hydra.run.dir={run_dir}", slow]
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 0 < last_train_time(run_dir) < SLOW_VALIDATION_S
    assert json.loads((run_dir / "metrics.json").read_text())["time/train_s"] > SLOW_VALIDATION_S


def test_throughput_monitor_refuses_what_it_cannot_measure_with() -> None:
    """Built from Python (no config checks): a window of one step has no rate, and a peak
    FLOP/s of 0 or less gave a negative or infinite MFU."""
    with pytest.raises(ValueError, match="window_size=1: pass a whole number of at least 2"):
        TokenThroughputMonitor(window_size=1)
    with pytest.raises(ValueError, match="available_flops=0: pass a positive number"):
        TokenThroughputMonitor(available_flops=0)
