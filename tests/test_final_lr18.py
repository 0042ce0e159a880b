"""The learning rate a run reports is the last step's, as its `train/loss` is.

The module logs its train metrics after the last step too (`models.metrics.loggers_write_after`);
the learning-rate monitor logged only every `log_every_n_steps`. A run whose last step was not a
multiple of it (`max_steps=5` with 3, or one that `max_epochs` ends) reported in metrics.json the
rate of the last multiple beside the last step's loss and `trainer/global_step`, and its loggers
had no rate for the last step.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from tests.helpers.cli import train_csv_run
from tests.helpers.corpora import one_file_corpus

LR = 1e-3


def scheduled_lr(step: int, warmup: int, total: int) -> float:
    """The rate lmtrain's default schedule (model/scheduler=cosine, min_lr_rate 0.1) gives the
    optimizer step that follows `step` steps: the one that step uses."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup, num_training_steps=total, min_lr_rate=0.1
    )
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return scheduler.get_last_lr()[0]


def lr_rows(run: Path) -> dict[int, float]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rows = csv.DictReader(f)
        return {int(r["step"]): float(r["train/lr/decay"]) for r in rows if r["train/lr/decay"]}


def assert_reports_last_lr(run: Path, expected: float) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    steps = int(metrics["trainer/global_step"])
    for group in ("decay", "no_decay"):
        assert metrics[f"train/lr/{group}"] == pytest.approx(expected, rel=1e-6), group
    logged = lr_rows(run)
    assert max(logged) == steps - 1  # the last step's row (rows count from 0)
    assert logged[steps - 1] == pytest.approx(expected, rel=1e-6)


def test_max_steps_not_a_multiple_of_log_every_n_steps_reports_the_last_lr(
    tmp_path: Path, data_dir: Path
) -> None:
    run = train_csv_run(
        tmp_path,
        data_dir,
        one_file_corpus(tmp_path / "corpus"),
        "steps",
        f"model.optimizer.lr={LR}",
        "model.scheduler.num_warmup_steps=2",
        "trainer.max_steps=5",
        "trainer.log_every_n_steps=3",
    )
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 5
    # Step 5 runs at the rate after 4 scheduler steps; step 3, the last logged before, at 2's.
    assert scheduled_lr(4, 2, 5) != pytest.approx(scheduled_lr(2, 2, 5))
    assert_reports_last_lr(run, scheduled_lr(4, 2, 5))


def test_a_run_max_epochs_ends_with_accumulation_reports_the_last_lr(
    tmp_path: Path, data_dir: Path
) -> None:
    # 4 micro-batches an epoch, 2 a step: 6 steps in three epochs, logged every 4. The last
    # step starts at a micro-batch that does not end the epoch: its rate is logged at the one
    # that does. Warm-up only: the rate of the step after s steps is LR * s / 1000.
    run = train_csv_run(
        tmp_path,
        data_dir,
        one_file_corpus(tmp_path / "corpus"),
        "epochs",
        f"model.optimizer.lr={LR}",
        "model.scheduler.num_warmup_steps=1000",
        "data.batch_size=8",
        "global_batch_size=16",
        "trainer.max_steps=-1",
        "trainer.max_epochs=3",
        "+trainer.limit_train_batches=4",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.log_every_n_steps=4",
    )
    steps = int(json.loads((run / "metrics.json").read_text())["trainer/global_step"])
    assert steps == 6
    assert_reports_last_lr(run, LR * (steps - 1) / 1000)
