"""A run stopped after a checkpoint and resumed shows each step once in TensorBoard, with the
values of an uninterrupted run: the steps the stopped run logged after its checkpoint, which the
resumed run logs again, are hidden (`lmtrain.utils.logger_runs.TensorBoardLogger`, `resumed`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.killed_runs import finish, resumable_corpus, start, train_command

# RESUMABLE_RUN's accumulation (2 micro-batches a step, 9 a 5-step epoch), with validations at
# step ends: after steps 2, 4, 7, 9, 11, 13 (logged at 1, 3, 6, 8, 10, 12).
OVERRIDES = [
    "trainer.max_steps=14",
    "trainer.val_check_interval=4",
    "trainer.log_every_n_steps=1",
    "logger=tensorboard",
]


class StopAt(Callback):
    """Ends the process, as a kill would, when `step` optimizer steps are done: at the next
    batch's start (`validation` false) or at the end of the validation after that step, before
    its checkpoint (checkpoint callbacks run last). What was logged is flushed to the event
    file first, as TensorBoard's writer does every few events."""

    def __init__(self, step: int, validation: bool) -> None:
        self.step, self.validation = step, validation

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        if not self.validation and trainer.global_step == self.step:
            self.stop(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.validation and trainer.global_step == self.step:
            self.stop(trainer)

    def stop(self, trainer: Trainer) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.flush()
        os._exit(3)


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` as TensorBoard loads the run folder's log (file order)."""
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.parametrize(
    ("every", "stop_at", "validation"),
    [
        # last.ckpt at step 9; the stopped run logged step 10's loss (at 9)
        (3, 10, False),
        # last.ckpt after the validation of step 10; the stopped run logged steps 11-12 and the
        # validation after 12 (at 11), which the resumed run runs again
        (5, 12, True),
    ],
)
def test_resumed_run_logs_each_step_once(
    tmp_path: Path, every: int, stop_at: int, validation: bool
) -> None:
    corpus = resumable_corpus(tmp_path)
    data_dir = tmp_path / "data"
    ref, resumed = tmp_path / "ref", tmp_path / "resumed"
    overrides = [*OVERRIDES, f"callbacks.model_checkpoint.every_n_train_steps={every}"]
    finish(train_command(corpus, data_dir, ref, *overrides), tmp_path / "ref.log")
    stop = [
        "+callbacks.stop._target_=tests.test_tensorboard_resume.StopAt",
        f"+callbacks.stop.step={stop_at}",
        f"+callbacks.stop.validation={validation}",
    ]
    stopped = train_command(corpus, data_dir, resumed, *overrides, *stop)
    log = tmp_path / "resumed.log"
    assert start(stopped, log).wait(timeout=600) == 3, log.read_text()[-3000:]
    finish(train_command(corpus, data_dir, resumed, *overrides, "ckpt_path=last"), log)

    for tag in ("train/loss", "val/loss"):
        expected, got = scalars(ref, tag), scalars(resumed, tag)
        steps = [step for step, _ in got]
        assert steps == sorted(set(steps)), f"{tag}: steps {steps}"
        assert got == expected, tag
