"""`callbacks.model_checkpoint.every_n_train_steps` writes last.ckpt on schedule before the first
validation too (Lightning alone waits for `val/loss` to exist), so a run preempted before its
first validation has a checkpoint to resume from; the best checkpoint still waits for val/loss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lmtrain.train import train
from tests.helpers.compose import char_corpus_run
from tests.helpers.killed_runs import (
    assert_same_run,
    finish,
    kill_at_marker,
    resumable_corpus,
    train_command,
)


class RecordLastCheckpoint(Callback):
    """Appends to `path` the step held by `<dirpath>/last.ckpt` before each training batch and
    when training ends, each time before the checkpoint callback's hook (Lightning runs
    checkpoint callbacks last): a scheduled save is written at the start of the batch after
    its step, so the last one shows at the end."""

    def __init__(self, dirpath: str, path: str) -> None:
        self.last, self.path = Path(dirpath) / "last.ckpt", Path(path)

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        self.record()

    def on_train_end(self, trainer: Trainer, *_: Any) -> None:
        self.record()

    def record(self) -> None:
        if self.last.exists():
            step = torch.load(self.last, map_location="cpu", weights_only=True)["global_step"]
            with self.path.open("a") as f:
                f.write(f"{step}\n")


def test_last_ckpt_follows_the_step_schedule_before_the_first_validation(
    compose_cfg, tmp_path: Path
) -> None:
    """Saves every 2 steps, validation at step 4: last.ckpt holds step 2 before any val/loss."""
    steps = tmp_path / "steps.txt"
    checkpoints = tmp_path / "run" / "checkpoints"
    cfg = compose_cfg(
        *char_corpus_run(tmp_path, "none"),
        "trainer.max_steps=7",
        "trainer.val_check_interval=4",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "+callbacks.record._target_=tests.test_checkpoint_schedule.RecordLastCheckpoint",
        f"+callbacks.record.dirpath={checkpoints}",
        f"+callbacks.record.path={steps}",
    )
    train(cfg)
    seen = sorted({int(step) for step in steps.read_text().split()})
    assert seen == [2, 4, 6]
    # The best checkpoint is still chosen by val/loss, at the one validation: step 4.
    (best,) = checkpoints.glob("best-*.ckpt")
    assert best.name.startswith("best-step=4-val_loss=")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus of tests/test_resume.py: 9 micro-batches per epoch."""
    return resumable_corpus(tmp_path_factory.mktemp("schedule_corpus"))


@pytest.mark.slow
def test_kill_before_the_first_validation_resumes_from_the_step_schedule(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """A save every 5 steps, no validation before the end: killed with SIGKILL at step 14, the
    run resumes from step 10 and ends as an uninterrupted run does, bitwise."""
    schedule = [
        "callbacks.model_checkpoint.every_n_train_steps=5",
        "trainer.val_check_interval=1000",
    ]
    reference, run_dir, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    finish(train_command(corpus, data_dir, reference, *schedule), log)
    command = train_command(corpus, data_dir, run_dir, *schedule)
    # Stalled after step 14 (a save every 5 steps: the last one was at step 10), then killed.
    pids = tmp_path / "pids"
    marker = pids / "rank0.pid"
    pause = [
        "+callbacks.pause._target_=tests.helpers.faults.Pace",
        f"+callbacks.pause.dirpath={pids}",
        "+callbacks.pause.after_step=14",
        "+callbacks.pause.seconds=600",
    ]
    kill_at_marker([*command, *pause], log, marker)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file(), "nothing to resume from: no checkpoint before the first validation"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10
    assert not list(last.parent.glob("best-*.ckpt"))  # no val/loss yet, no best checkpoint
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference)
