"""`StepLearningRateMonitor`: Lightning's LearningRateMonitor, one row per optimizer step.

Lightning's logs the learning rates before every training batch of a step the loggers write. With
gradient accumulation (`global_batch_size`) a step is several batches, so each logged step got as
many identical rows as it has micro-batches, at the same step: duplicate points in TensorBoard and
MLflow, and repeated CSV rows. This one logs at the step's first micro-batch only.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor


class StepLearningRateMonitor(LearningRateMonitor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_seen: int | None = None  # global_step at the last micro-batch's start

    def on_train_batch_start(self, trainer: Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.global_step == self._step_seen:
            return  # a later micro-batch of the same optimizer step
        self._step_seen = trainer.global_step
        super().on_train_batch_start(trainer, *args, **kwargs)
