"""`StepScheduledCheckpoint`: Lightning's ModelCheckpoint whose last.ckpt keeps to
`every_n_train_steps` before the first validation too.

Lightning 2.6 defers a step-triggered save while the monitored metric (`val/loss`) does not
exist yet: top-k needs the metric, and Lightning holds back `last.ckpt` with it. A run that
validates every 250 steps and saves every 5 then has nothing to resume from until step 250,
which is exactly when a preempted cluster job needs it. No ModelCheckpoint argument separates
the two, so this subclass writes last.ckpt on the step schedule itself while the metric is
missing and leaves the best checkpoint to Lightning (saved at the first validation, as before).
Once the metric exists, Lightning's own logic runs unchanged.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class StepScheduledCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes last.ckpt every `every_n_train_steps` optimizer steps even
    before the monitored metric exists; top-k by that metric is Lightning's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_only_step: int | None = None  # step of the latest last.ckpt written here

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: checkpoints written with Lightning's class restore into this one.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run starts on the step its checkpoint holds: no need to write it again.
        self._last_only_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        candidates = self._monitor_candidates(trainer) if self._last_due(trainer) else None
        if candidates is not None and self.monitor not in candidates:
            bookkeeping = self._last_global_step_saved, self._last_checkpoint_saved
            self._save_last_checkpoint(trainer, candidates)
            # Hidden from Lightning's bookkeeping: the top-k save it defers (below) must still
            # run at this step's validation when one follows this batch, and a run that never
            # validates still gets its final last.ckpt at the end of training.
            self._last_global_step_saved, self._last_checkpoint_saved = bookkeeping
            self._last_only_step = trainer.global_step
        # Lightning's own step save; while the metric is missing it only defers top-k.
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _last_due(self, trainer: Trainer) -> bool:
        """An `every_n_train_steps` step whose last.ckpt is not written yet, while a metric is
        monitored (without one, Lightning saves on schedule itself). The same on every rank."""
        every = self._every_n_train_steps
        return bool(
            self.save_last
            and self.monitor is not None
            and every >= 1
            and trainer.global_step % every == 0
            and self._last_only_step != trainer.global_step
            and not self._should_skip_saving_checkpoint(trainer)
        )
