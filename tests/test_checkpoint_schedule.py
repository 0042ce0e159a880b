"""`callbacks.model_checkpoint.every_n_train_steps` writes last.ckpt on schedule before the first
validation too (Lightning alone waits for `val/loss` to exist), so a run preempted before its
first validation has a checkpoint to resume from; the best checkpoint still waits for val/loss.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.train import train
from tests.checkpoints import write_corpus
from tests.helpers import one_file_corpus
from tests.test_resume import assert_same_run, finish, kill, start, train_command


class RecordLastCheckpoint(Callback):
    """Appends to `path` the step held by `<dirpath>/last.ckpt` before each training batch."""

    def __init__(self, dirpath: str, path: str) -> None:
        self.last, self.path = Path(dirpath) / "last.ckpt", Path(path)

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if self.last.exists():
            step = torch.load(self.last, map_location="cpu", weights_only=True)["global_step"]
            with self.path.open("a") as f:
                f.write(f"{step}\n")


class PauseAtStep(Callback):
    """When optimizer step `step` is done, writes `marker` and sleeps: the test kills the run
    there, at a moment of its own choosing that saves nothing."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(600)


def test_last_ckpt_follows_the_step_schedule_before_the_first_validation(
    compose_cfg, tmp_path: Path
) -> None:
    """Saves every 2 steps, validation at step 4: last.ckpt holds step 2 before any val/loss."""
    steps = tmp_path / "steps.txt"
    checkpoints = tmp_path / "run" / "checkpoints"
    cfg = compose_cfg(
        "data=text_files",
        f"data.source.path={one_file_corpus(tmp_path / 'corpus')}",
        "data.tokenizer.kind=char",
        "logger=none",
        "callbacks.text_samples=null",
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
    folder = tmp_path_factory.mktemp("schedule_corpus")
    path = folder / "corpus.txt"
    path.write_text((write_corpus(folder / "docs", n_docs=1, lines=45) / "doc0.txt").read_text())
    return path


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
    marker = tmp_path / "paused"
    pause = [
        "+callbacks.pause._target_=tests.test_checkpoint_schedule.PauseAtStep",
        "+callbacks.pause.step=14",
        f"+callbacks.pause.marker={marker}",
    ]
    proc = start([*command, *pause], log)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file(), "nothing to resume from: no checkpoint before the first validation"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10
    assert not list(last.parent.glob("best-*.ckpt"))  # no val/loss yet, no best checkpoint
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference)
