"""When a resumed run's `.hydra/` record is written: once it trains, never when it trains nothing.

`ResumeRun` (`resume=`, or a command in a folder that already holds a run's record) makes the
record's files at job start and leaves them pending here. They replace the folder's record when
training starts (the checkpoint restored, Lightning's and lmtrain's checks passed): a command
refused before then must not become the config a later `resume=<run>` reads.

A resume of a run that had ended (at `max_steps`, or stopped by EarlyStopping) trains nothing:
its overrides (`trainer.accumulate_grad_batches=3`, an lr) were never checked against the
checkpoint nor applied, and writing them made the next `resume=` refuse a value the user never
typed there (found by a red team). Such a command leaves the record as it was and says so
(`discard_resumed_record`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)

# The resumed run's `.hydra/` files, made at job start and written once the run has started.
_pending_record: list[Callable[[], None]] = []


def pend_record(write: Callable[[], None] | None) -> None:
    """Replace this process's pending record with `write` (None: no record to write)."""
    _pending_record.clear()  # an earlier job's in this process (refused, or a notebook's)
    if write is not None:
        _pending_record.append(write)


class WriteResumedRecord(Callback):
    """Writes the pending `.hydra/` files when training starts, unless the run stops before its
    first step (a callback before this one, `EndedRun`, found that EarlyStopping had ended it)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.should_stop:
            write_resumed_record()


def write_resumed_record() -> None:
    """Write the `.hydra/` files `ResumeRun` made for this process, if any, once."""
    while _pending_record:
        _pending_record.pop()()


def discard_resumed_record(step: int) -> None:
    """Drop the pending `.hydra/` files of a run that trained nothing (it had ended at `step`),
    saying which typed overrides were not applied."""
    if not _pending_record:
        return  # rank > 0, or no record of the folder's to replace
    _pending_record.clear()
    typed = []
    if HydraConfig.initialized():
        task = HydraConfig.get().overrides.task
        typed = [str(o) for o in task if not str(o).startswith(("resume=", "ckpt_path="))]
    if not typed:  # nothing typed, nothing left unapplied (EndedRun says it had ended)
        return
    log.warning(
        "The run had ended at step %d and trained nothing: the overrides typed with it (%s) "
        "were not applied, and its .hydra/ record stands; to train on, raise "
        "trainer.max_steps (resume=<run folder> trainer.max_steps=<more>; a run EarlyStopping "
        "ended stays ended)",
        step,
        " ".join(typed),
    )
