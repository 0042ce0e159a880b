"""Lightning's private API for the epoch counters of a resumed run; tests/test_epoch_resume18.py
tests each use (tests/test_final_epoch23.py `cut_epoch_logged_as_running`). Part of
lmtrain.lightning_compat, whose rules it follows: each function says what it buys and whether
a public alternative exists.

Lightning counts a fit's epochs in `fit_loop.epoch_progress` (ready, started, processed,
completed), and a resume decides from those counters alone whether the epoch it finds is under
way or over, how many epochs `max_epochs` has left, and which epoch the sampler shuffles. Two
of its moves at an epoch's edge leave them wrong:

- A fit that leaves an epoch before its last batch (`max_steps` reached, a stop) counts that
  epoch processed and completed. A save after that (the last.ckpt written as training ends)
  held a finished epoch: the run extended with `max_epochs` started the next epoch, and the rest
  of the cut one was never trained.
- A restart from a save after an epoch's last training batch counts that epoch finished, and
  then runs the next one without counting it ready or started (nor calling its
  `on_train_epoch_start` hooks): every save in that epoch held it as finished, and a second
  restart from one of them took the epoch for over and began the next.

And one of the validation loop's: a restart into a validation cut before its end counts that
validation's batches again but not the epoch's (see `count_restarted_validation_once`).

The same count reaches the loggers: `trainer.current_epoch` (the epochs completed) is the `epoch`
Lightning adds to every row, so the final validation after such a fit said the next epoch (see
`cut_epoch_logged_as_running`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import Trainer


def count_cut_epoch_as_running(trainer: Trainer, checkpoint: dict[str, Any]) -> None:
    """In `checkpoint`, being saved after the fit loop left an epoch before its last batch and
    counted it processed (`max_steps` reached mid-epoch, or a stop), hold that epoch as under
    way: as the save at its last step (`every_n_train_steps`) holds it.

    Buys: a run that `max_steps` ended mid-epoch, extended (`max_epochs`, a larger `max_steps`),
    trains the rest of that epoch and counts its epochs as the uninterrupted run does. From the
    save as Lightning writes it, the extension began the next epoch: `max_epochs=3` trained 34
    of 42 steps, with another sampler epoch. A run resumed at its end (nothing left to train)
    is unaffected. Public alternative: none (the loop decides from these counters alone).
    """
    if not counted_cut_epoch_completed(trainer):
        return
    saved = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    for counts in (saved["total"], saved["current"]):
        counts["processed"] = counts["completed"] = counts["started"] - 1
    checkpoint["epoch"] = saved["current"]["completed"]  # Lightning's `current_epoch`


def counted_cut_epoch_completed(trainer: Trainer) -> bool:
    """Whether the fit loop left its epoch before the epoch's last batch (`max_steps` reached
    mid-epoch, or a stop) and counted that epoch processed and completed, as at its end."""
    fit_loop = trainer.fit_loop
    epoch, batches = fit_loop.epoch_progress.current, fit_loop.epoch_loop.batch_progress
    counted = epoch.ready > 0 and epoch.processed == epoch.ready  # after the epoch's end
    # Not when the epoch counted ran to its last batch, or none of it ran.
    return counted and not batches.is_last_batch and batches.current.ready > 0


@contextlib.contextmanager
def cut_epoch_logged_as_running(trainer: Trainer) -> Iterator[None]:
    """While inside (around `trainer.validate` after `trainer.fit`), after a fit that left an
    epoch before its last batch, `trainer.current_epoch` is that epoch's: the `epoch` Lightning
    adds to each logged row (its logger connector's `log_metrics`). Restored on exit.

    Buys: the final validation's rows carry the epoch training was in (as the checkpoint does,
    `count_cut_epoch_as_running`), in every logger: a run `max_steps` ended inside epoch 0
    logged them at epoch 1, and a run extended from it went back to epoch 0 after that row. A
    fit that ended at an epoch's end (`max_epochs`) keeps Lightning's count. Public
    alternative: none (a metric named `epoch`, logged by the module, would also land in the
    run's metrics). Only the count the loggers read changes, never a checkpoint's: lmtrain
    saves nothing in `trainer.validate`.
    """
    epoch = trainer.fit_loop.epoch_progress.current
    completed = epoch.completed
    if counted_cut_epoch_completed(trainer):
        epoch.completed = epoch.started - 1  # the cut epoch's index, as in the checkpoint
    try:
        yield
    finally:
        epoch.completed = completed


def start_epoch_after_restart_at_epoch_end(trainer: Trainer) -> None:
    """From `on_train_start`, after a restore: when Lightning's restart took a save after an
    epoch's last training batch for that epoch's end, let the next epoch start as any epoch
    does (counted ready and started, its `on_train_epoch_start` hooks called).

    Buys: saves in that epoch (a preemption's, a scheduled last.ckpt) hold it as under way, and
    a second interruption resumes inside it. Lightning counts the ended epoch processed and
    completed, but keeps its mid-epoch restart stage for the next one, which then skips those
    counts: a save in it held ready == processed, a finished epoch, and the run resumed from
    it trained that epoch's remaining batches as the next epoch (45 steps for 42). A save
    before a validation is written so that its restart is not this one
    (`lightning_compat.mark_validation_pending`). Public alternative: none.
    """
    fit_loop = trainer.fit_loop
    epoch_loop = fit_loop.epoch_loop
    if (
        fit_loop.restarted_mid_epoch
        and epoch_loop.restarted_on_train_batch_end
        and epoch_loop.batch_progress.is_last_batch
    ):  # Lightning's own test in `_FitLoop.reset`, which counted the epoch ended
        fit_loop.reset_restart_stage()


def count_restarted_validation_once(trainer: Trainer) -> None:
    """From `on_train_start`, after a restore: when the restart goes back into a validation cut
    before its end (a preemption's save, `lightning_compat.mark_validation_pending`), count the
    epoch's validation batches from those completed, as Lightning counts that validation's.

    Buys: a save after that validation (the last.ckpt written once it ends) holds it finished.
    Lightning's restart sets back the counts of the validation (`current`) but not those of
    the epoch's validations (`total`, from which the next restart decides), which kept the
    batch it found started: a kill after that save resumed into the finished validation
    again, ran it on the batches it had left (none) and logged a second row at its step.
    Public alternative: none (the loop decides from these counters alone).
    """
    val_loop = trainer.fit_loop.epoch_loop.val_loop
    if val_loop.restarted_mid_evaluation:
        val_loop.batch_progress.total.reset_on_restart()
