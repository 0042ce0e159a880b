"""A run a callback stops logs its last step's row, and metrics.json reports that step (cb24).

Lightning's Timer (`max_time`) sets `trainer.should_stop` in `on_train_batch_end` and
EarlyStopping after a validation (also one between the micro-batches of a step): both after the
module decided not to log the step. The loggers then wrote a row of an earlier step's values
(Timer) or none (EarlyStopping), and metrics.json reported an earlier step's `train/loss` and
`tokens_seen` beside the last `trainer/global_step` (red team cb24, findings 1 and 2).
`models.metrics.StepDecision` and `LastStep` now write the step's own row, once.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli

TOKENS_PER_WINDOW, WINDOWS = 32, 8  # TINY's data.block_size, data.batch_size
EARLY_STOPPING = [
    "+callbacks.es._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.es.monitor=val/loss",
    "+callbacks.es.patience=1",
    "+callbacks.es.min_delta=0.5",  # no validation improves that much: the second one stops
]


def stopped_run(tmp_path: Path, data_dir: Path, *overrides: str) -> tuple[list[dict], dict]:
    """The train rows (those with train/loss) of a tiny CSV run and its metrics.json."""
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path,
        data_dir,
        "logger=csv",
        "callbacks.text_samples=null",
        f"hydra.run.dir={run}",
        *overrides,
    )
    out = run_cli("train", *cli)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(run / "csv" / "metrics.csv", newline="") as file:
        every = list(csv.DictReader(file))
    metrics = json.loads((run / "metrics.json").read_text())
    # metrics.json's learning rate is the last one logged: it was an earlier step's after a
    # late stop, or missing (rev_diff24).
    rates = [float(r["train/lr/decay"]) for r in every if r.get("train/lr/decay")]
    assert rates and metrics["train/lr/decay"] == pytest.approx(rates[-1], rel=1e-6)
    return [r for r in every if r.get("train/loss")], metrics


def assert_last_step_row(rows: list[dict], metrics: dict, accumulate: int = 1) -> int:
    """The last train row is the last step's, written once, and metrics.json reports it."""
    steps = int(metrics["trainer/global_step"])
    assert rows, "no train row"
    last = rows[-1]
    assert int(last["step"]) == steps - 1, (last, steps)
    tokens = steps * accumulate * WINDOWS * TOKENS_PER_WINDOW
    assert float(last["tokens_seen"]) == tokens
    assert [int(r["step"]) for r in rows].count(steps - 1) == 1  # no second (stale) row
    losses = [r["train/loss"] for r in rows]
    assert len(set(losses)) == len(losses), "a row repeats an earlier step's loss"
    for name in ("train/loss", "tokens_seen", "train/grad_norm"):
        assert metrics[name] == pytest.approx(float(last[name]), rel=1e-6), name
    return steps


def test_max_time_stop_logs_its_last_step(tmp_path: Path, data_dir: Path) -> None:
    rows, metrics = stopped_run(
        tmp_path,
        data_dir,
        "trainer.max_steps=100000",
        "trainer.val_check_interval=100000",
        "trainer.log_every_n_steps=1000",  # the stop step is not logged by the cadence
        "+trainer.max_time={seconds:3}",
    )
    steps = assert_last_step_row(rows, metrics)
    assert 0 < steps < 1000


def test_early_stopping_off_cadence_logs_its_last_step(tmp_path: Path, data_dir: Path) -> None:
    rows, metrics = stopped_run(
        tmp_path,
        data_dir,
        "trainer.max_steps=20",
        "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=3",
        *EARLY_STOPPING,
    )
    assert assert_last_step_row(rows, metrics) == 8  # stopped at the second validation


def test_early_stopping_mid_step_logs_the_last_whole_step(tmp_path: Path, data_dir: Path) -> None:
    """Validations after batches 3 and 6 of steps of 4: the stop comes within step 2, and
    the run's last step is step 1."""
    rows, metrics = stopped_run(
        tmp_path,
        data_dir,
        "trainer.max_steps=20",
        "trainer.accumulate_grad_batches=4",
        "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=5",
        *EARLY_STOPPING,
    )
    assert assert_last_step_row(rows, metrics, accumulate=4) == 1


def test_max_steps_row_as_before(tmp_path: Path, data_dir: Path) -> None:
    rows, metrics = stopped_run(
        tmp_path, data_dir, "trainer.max_steps=5", "trainer.log_every_n_steps=3"
    )
    assert assert_last_step_row(rows, metrics) == 5
    assert [int(r["step"]) for r in rows] == [2, 4]
