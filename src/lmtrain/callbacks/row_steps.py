"""`ResumedRowSteps`: a resumed run logs each row at the step the uninterrupted run logs it at.

Lightning logs every row at its count of stepped batches (`step` in csv/metrics.csv, W&B's
`trainer/global_step` axis). A checkpoint holds that count as it was at the save, and the
restart adjusts it by whether a validation is due at the restored batch, judged under the
resumed run's settings. A resume with another `trainer.val_check_interval` than the saved run's
(a run extended with rarer validations) was judged wrongly: every later row one step early or
late, two rows at one step, the final validation at another step than metrics.json's.

The count equals `trainer.global_step` once a step has ended (a step whose update
`model.nan_guard=skip` dropped counts too), and one less while that step's validation runs. So
the resumed run sets it before its first row: at its first training batch, or at the
validation the restart runs first, which follows a step's end unless the checkpoint was saved
between the micro-batches of a step (kept in the checkpoint: `mid_step`), or at the run's final
validation when no batch was left to train (a run killed in its final validation).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.callbacks.resume import mid_step
from lmtrain.lightning_compat import set_logged_steps


class ResumedRowSteps(Callback):
    """Sets Lightning's logged-step count where the uninterrupted run has it, on resume."""

    def __init__(self) -> None:
        self._trainer: Trainer | None = None
        self._restored: dict[str, Any] | None = None  # set by a restore, until the first row

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        return {"mid_step": fitting and mid_step(trainer)}

    def on_load_checkpoint(self, trainer: Trainer, *args: Any) -> None:
        self._restored = {}  # a checkpoint written before this callback holds no state of it

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict)

    def on_train_batch_start(self, trainer: Trainer, *args: Any) -> None:
        if self._restored is not None:
            self._restored = None
            set_logged_steps(trainer, trainer.global_step)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The validation a restart runs before any batch (one due at the saved batch) logs
        where the uninterrupted run's did: before the count's increment at a step's end."""
        if trainer.sanity_checking or self._restored is None:
            return
        if trainer.state.fn == TrainerFn.VALIDATING:
            # The run's final validation, after a fit that had no batch left to run (a run
            # killed in that validation): the uninterrupted run logs it after the last step's
            # increment (train.py validates without a ckpt_path, so nothing restores in between).
            self._restored = None
            set_logged_steps(trainer, trainer.global_step)
            return
        if trainer.state.fn != TrainerFn.FITTING or "mid_step" not in self._restored:
            return
        steps = trainer.global_step - (0 if self._restored["mid_step"] else 1)
        self._restored = None
        set_logged_steps(trainer, steps)
