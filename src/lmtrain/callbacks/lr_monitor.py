"""`StepLearningRateMonitor`: Lightning's LearningRateMonitor, one row per optimizer step.

Lightning's logs the learning rates before every training batch of a step the loggers write. With
gradient accumulation (`global_batch_size`) a step is several batches, so each logged step got as
many identical rows as it has micro-batches, at the same step: duplicate points in TensorBoard and
MLflow, and repeated CSV rows. This one logs at the step's first micro-batch only: the batch whose
index in the epoch is a multiple of `accumulate_grad_batches`, where Lightning starts each step.
The index, unlike a count kept in the callback, holds in a run resumed from a checkpoint saved
between micro-batches (after a validation in mid-step), which logged the step's rates again.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor


class StepLearningRateMonitor(LearningRateMonitor):
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: Any, batch: Any, batch_idx: int, *args: Any
    ) -> None:
        if batch_idx % trainer.accumulate_grad_batches:
            return  # a later micro-batch of the same optimizer step
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx, *args)
