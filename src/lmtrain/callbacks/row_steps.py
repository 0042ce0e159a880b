"""`ResumedRowSteps`: a resumed run logs each row at the step the uninterrupted run logs it at.

Lightning logs every row at its count of stepped batches (`step` in csv/metrics.csv, W&B's
`trainer/global_step` axis). A checkpoint holds that count as it was at the save, and the
restart adjusts it by whether a validation is due at the restored batch, judged under the
resumed run's settings. A resume with another `trainer.val_check_interval` than the saved run's
(a run extended with rarer validations) was judged wrongly: every later row one step early or
late, two rows at one step, the final validation at another step than metrics.json's.

The count differs from `trainer.global_step` only by the micro-batch steps that skipped their
update (`model.nan_guard=skip`): so the checkpoint holds that difference, as it was at the last
step's end, and the resumed run sets the count from it before its first row (a training batch,
or the validation the restart runs first), whatever the restart made of it.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.lightning_compat import accumulating, set_logged_steps, step_end_counters


class ResumedRowSteps(Callback):
    """Holds (count of stepped batches - global step) in checkpoints; sets the count on resume."""

    def __init__(self) -> None:
        self._skipped = 0  # stepped batches whose update was skipped, as of the last step's end
        self._restored: dict[str, Any] | None = None
        self._trainer: Trainer | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        # Saved between the micro-batches of a step (a validation or a preemption there).
        mid_step = fitting and trained_in_epoch(trainer) and accumulating(trainer)
        return {"skipped_steps": self._skipped, "mid_step": mid_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict if "skipped_steps" in state_dict else None

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        """At a step's end: Lightning counts the batch stepped once every hook has returned."""
        if not accumulating(trainer):
            self._skipped = step_end_counters(trainer)["stepped"] + 1 - trainer.global_step

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        self._set(trainer, trainer.global_step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The validation a restart runs before any batch (one due at the saved batch) logs
        where the uninterrupted run's did: after a step's end, before the count's increment."""
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking or not self._restored:
            return
        self._set(trainer, trainer.global_step - (0 if self._restored["mid_step"] else 1))

    def _set(self, trainer: Trainer, steps: int) -> None:
        if self._restored is None:
            return
        self._skipped, self._restored = int(self._restored["skipped_steps"]), None
        set_logged_steps(trainer, steps + self._skipped)


def trained_in_epoch(trainer: Trainer) -> bool:
    """Whether a micro-batch of the current epoch has been trained."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0
