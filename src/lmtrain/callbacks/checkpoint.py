"""`StepScheduledCheckpoint`: Lightning's ModelCheckpoint whose last.ckpt keeps to
`every_n_train_steps` before the first validation too.

Lightning 2.6 defers a step-triggered save while the monitored metric (`val/loss`) does not
exist yet: top-k needs the metric, and Lightning holds back `last.ckpt` with it. A run that
validates every 250 steps and saves every 5 then has nothing to resume from until step 250,
which is exactly when a preempted cluster job needs it. No ModelCheckpoint argument separates
the two, so while the metric is missing this subclass writes last.ckpt on the step schedule
itself, through the public `trainer.save_checkpoint`, and leaves everything else (top-k, the
saves once the metric exists) to Lightning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class StepScheduledCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that writes last.ckpt every `every_n_train_steps` optimizer steps even
    before the monitored metric exists; top-k by that metric is Lightning's."""

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, every_n_train_steps=every_n_train_steps, **kwargs)
        self.last_every_n_steps = every_n_train_steps or 0
        self._last_written_step: int | None = None  # step of the latest last.ckpt written here

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: checkpoints written with Lightning's class restore into this one.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run starts on the step its checkpoint holds: no need to write it again.
        self._last_written_step = trainer.global_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._last_due(trainer):
            # The same decision on every rank (the metric exists everywhere or nowhere), as
            # save_checkpoint, a collective under DDP and FSDP, needs.
            trainer.save_checkpoint(Path(self.dirpath or trainer.default_root_dir) / "last.ckpt")
            self._last_written_step = trainer.global_step

    def _last_due(self, trainer: Trainer) -> bool:
        """A scheduled step whose last.ckpt Lightning holds back: the monitored metric does not
        exist yet (without a monitor, or once it exists, Lightning saves on schedule itself)."""
        every = self.last_every_n_steps
        return bool(
            self.save_last
            and self.monitor is not None
            and self.monitor not in trainer.callback_metrics
            and every >= 1
            and trainer.global_step % every == 0
            and trainer.global_step != self._last_written_step
            and not (trainer.fast_dev_run or trainer.sanity_checking)
        )
