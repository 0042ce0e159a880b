"""`train/loss` is the optimizer step's loss, the mean over its micro-batches and ranks, and the
throughput and learning-rate monitors log once per optimizer step the loggers write.

Real runs train the same 16 windows a step from the same seed (same windows, same gradients): one
process with batches of 16, one with batches of 8 and 2 micro-batches a step (`global_batch_size`),
and two DDP ranks (gloo) with 8 each. Their `train/loss` must agree row for row and in
metrics.json; it was the last micro-batch's loss with accumulation, and rank 0's under DDP. A run
resumed from a checkpoint written between the two micro-batches of a step logs that step's mean
too (the sum so far is in the checkpoint).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.cli import train_csv_run
from tests.helpers.corpora import one_file_corpus

TOLERANCE = 1e-5
EXACT_RESUME = "+callbacks.exact_resume._target_=lmtrain.callbacks.resume.ExactResume"
# The accumulated run validates after micro-batch 3, between the two of step 2, and keeps every
# checkpoint that validation writes (save_top_k=-1): the resumed run starts from it.
MID_STEP_SAVES = [
    "trainer.val_check_interval=3",
    "callbacks.model_checkpoint.save_top_k=-1",
    EXACT_RESUME,
]
RUNS = {
    "one": ["data.batch_size=16"],
    "accumulated": ["data.batch_size=8", "global_batch_size=16", *MID_STEP_SAVES],
    "ddp": ["trainer=ddp_cpu", "data.batch_size=8"],
}
MICRO_BATCHES = {"one": 1, "accumulated": 2, "ddp": 1, "resumed": 2}  # per step and device


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("step_loss")
    corpus = one_file_corpus(root / "corpus")

    def train(name: str, *overrides: str) -> Path:
        return train_csv_run(root, data_dir, corpus, name, *overrides)

    done = {name: train(name, *overrides) for name, overrides in RUNS.items()}
    (mid_step,) = (done["accumulated"] / "checkpoints").glob("best-step=1-*.ckpt")
    resume_from = shutil.copy(mid_step, root / "mid_step.ckpt")  # no '=' in the override
    done["resumed"] = train("resumed", *RUNS["accumulated"], f"ckpt_path={resume_from}")
    return done


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def series(run: Path, key: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[key])) for row in rows(run) if key in row]


def assert_close(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [s for s, _ in got] == [s for s, _ in want], (got, want)
    for (step, a), (_, b) in zip(got, want, strict=True):
        assert abs(a - b) <= TOLERANCE, f"step {step}: {a} vs {b} ({got} vs {want})"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["accumulated", "ddp"])
def test_train_loss_is_the_step_mean_over_micro_batches_and_ranks(
    runs: dict[str, Path], name: str
) -> None:
    reference = series(runs["one"], "train/loss")
    assert [step for step, _ in reference] == [0, 1, 2, 3]  # every step logged once
    assert_close(series(runs[name], "train/loss"), reference)
    metrics = [json.loads((runs[n] / "metrics.json").read_text()) for n in ("one", name)]
    assert abs(metrics[0]["train/loss"] - metrics[1]["train/loss"]) <= TOLERANCE


@pytest.mark.slow
def test_a_run_resumed_between_micro_batches_logs_the_step_mean(runs: dict[str, Path]) -> None:
    resumed = series(runs["resumed"], "train/loss")
    assert [step for step, _ in resumed] == [1, 2, 3]  # from step 2 (counted from 1) on
    assert_close(resumed, series(runs["one"], "train/loss")[1:])


@pytest.mark.slow
def test_throughput_and_learning_rates_log_once_per_optimizer_step(runs: dict[str, Path]) -> None:
    for name, run in runs.items():
        first = 2 if name == "resumed" else 1  # the resumed run's first step is step 2
        # One row per step, after its last micro-batch, with every micro-batch of the step
        # counted: under the step its train/loss has (Lightning counts training rows from 0).
        want = [(step - 1, float(step * MICRO_BATCHES[name])) for step in range(first, 5)]
        assert series(run, "train/batches") == want, name
        steps = [step for step, _ in want]
        assert [step for step, _ in series(run, "train/loss")] == steps, name
        # The learning rates, once per step too: not once per micro-batch.
        assert [step for step, _ in series(run, "train/lr/decay")] == steps, name
