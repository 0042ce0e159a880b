"""A resumed fit that starts inside the validation its checkpoint left pending, at `max_steps`.

`mark_validation_pending` (lightning_compat) makes a preemption's save resume into the validation
due after its step. At the run's last step that is not enough: with the restored step at
`max_steps`, Lightning's fit loop is done before it starts (`FitLoop.skip`), and the validation,
its row, text samples and best checkpoint were lost (found by a red team). The fit loop's own
epoch loop does run such a validation when it is entered (a restart mid-validation at
`max_steps` is done only once its validation loop has run), so the fit loop is let in by a
`max_steps` one higher, put back as that validation starts, before anything reads it for the
loop's end.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer


def validation_pending(checkpoint: dict[str, Any]) -> bool:
    """Whether `checkpoint` resumes into a validation of the fit: its validation loop started a
    batch and processed none (as `mark_validation_pending` leaves it; a save inside a validation
    before its first batch ended has the same counters).

    Buys: the preemption callback knows, before the fit loop starts, that a run at `max_steps`
    still has a validation to run. Public alternative: none (Lightning's loop state in the
    checkpoint is its own format).
    """
    loops = checkpoint.get("loops") or {}
    progress = (loops.get("fit_loop") or {}).get("epoch_loop.val_loop.batch_progress") or {}
    current = progress.get("current") or {}
    return current.get("started", 0) > 0 and current.get("processed", 0) == 0


def enter_fit_at_max_steps(trainer: Trainer, step: int) -> int | None:
    """From `on_fit_start` or later (the optimizers and their schedules, sized to `max_steps`,
    are built), before the fit loop runs: raise `max_steps` by one when `step`, the restored
    checkpoint's, has reached it, so that the loop is entered; returns the `max_steps` to put
    back (None: left as it was).

    Buys: a resume into the validation pending at the last step (`validation_pending`) runs it.
    Public alternative: none; `FitLoop.skip` decides on `max_steps` before any hook is called.
    """
    max_steps = trainer.fit_loop.max_steps
    if max_steps < 0 or step < max_steps:
        return None
    trainer.fit_loop.epoch_loop.max_steps = step + 1
    return max_steps


def end_fit_at(trainer: Trainer, max_steps: int) -> None:
    """Put back the `max_steps` that `enter_fit_at_max_steps` raised (from the pending
    validation's `on_validation_start`): the epoch loop ends once that validation has run, as
    the uninterrupted run's did after its last step."""
    trainer.fit_loop.epoch_loop.max_steps = max_steps
