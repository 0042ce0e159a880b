"""The last step's row reaches the loggers when the run's end is off the logging cadence.

Red team rev_opt18: with `trainer.max_steps=20 trainer.log_every_n_steps=7`, csv/metrics.csv had
rows at steps 6 and 13, and at step 19 only the throughput columns: no train/loss, tokens_seen,
train/lr/*, grad_norm or clipped (metrics.json had them). The module logged them at the last
step (`models.metrics.loggers_write_after`), but Lightning's logger connector sends logged
values only every `log_every_n_steps` (or when stopping) and dropped them. An epoch-bound run
(`max_steps=-1`, `max_epochs`) lost its last row the same way.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.corpora import one_file_corpus

# Columns of a logged training step (grad_norm is logged on logged steps, clipped with clipping).
STEP_COLUMNS = ("train/loss", "tokens_seen", "train/grad_norm", "train/clipped", "train/lr/decay")
RUN = ["callbacks.text_samples=null", "trainer.gradient_clip_val=1.0"]


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def steps_of(run: Path, key: str) -> list[int]:
    return [int(row["step"]) for row in rows(run) if key in row]


@pytest.mark.parametrize(
    ("max_steps", "every", "logged"),
    [
        (5, 2, [1, 3, 4]),  # the last step (5, row 4) is off the cadence: its row too
        (4, 2, [1, 3]),  # on the cadence: as before, once
        (5, 0, []),  # log_every_n_steps=0: no training rows at all
    ],
)
def test_a_max_steps_runs_last_step_has_the_row_of_a_logged_step_once(
    tmp_path: Path, data_dir: Path, max_steps: int, every: int, logged: list[int]
) -> None:
    run = train_csv_run(
        tmp_path, data_dir, one_file_corpus(tmp_path / "corpus"), "run", *RUN,
        f"trainer.max_steps={max_steps}", f"trainer.log_every_n_steps={every}",
    )  # fmt: skip
    for column in STEP_COLUMNS:
        assert steps_of(run, column) == logged, column
    metrics = json.loads((run / "metrics.json").read_text())
    if logged:  # the last step's row holds what metrics.json reports of it
        (last,) = [r for r in rows(run) if "train/loss" in r and int(r["step"]) == max_steps - 1]
        for column in ("train/loss", "tokens_seen", "train/grad_norm"):
            assert float(last[column]) == pytest.approx(metrics[column]), column
    assert steps_of(run, "val/loss") == [1, 3, max_steps]  # no validation added at the end


def test_an_epoch_bound_runs_last_step_has_its_row_under_accumulation(
    tmp_path: Path, data_dir: Path
) -> None:
    """One epoch of 10 micro-batches, 2 a step: 5 steps, logged every 2, and the 5th."""
    run = train_csv_run(
        tmp_path, data_dir, one_file_corpus(tmp_path / "corpus"), "run", *RUN,
        "trainer.max_steps=-1", "trainer.max_epochs=1", "+trainer.limit_train_batches=10",
        "global_batch_size=16", "trainer.val_check_interval=null",
        "trainer.log_every_n_steps=2",
    )  # fmt: skip
    for column in STEP_COLUMNS:
        assert steps_of(run, column) == [1, 3, 4], column
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 5


def test_a_run_killed_and_resumed_writes_the_last_row_of_an_uninterrupted_one(
    tmp_path: Path, data_dir: Path
) -> None:
    """Killed after step 4 (its row not yet written; last.ckpt from the step-2 validation),
    resumed to step 5: every training row, the last one included, as the uninterrupted run's."""
    corpus = one_file_corpus(tmp_path / "corpus")
    settings = [*RUN, "trainer.max_steps=5", "trainer.log_every_n_steps=2"]
    reference = train_csv_run(tmp_path, data_dir, corpus, "uninterrupted", *settings)
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", *settings, corpus=corpus
    )
    kill = ["+callbacks.kill._target_=tests.helpers.faults.KillAtStep", "+callbacks.kill.step=4"]
    killed = run_cli("train", *cli, *kill, fresh=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def values(folder: Path, column: str) -> dict[int, float]:
        return {int(r["step"]): float(r[column]) for r in rows(folder) if column in r}

    for column in STEP_COLUMNS:
        assert steps_of(run, column) == [1, 3, 4], column  # each once
        assert values(run, column) == pytest.approx(values(reference, column)), column
