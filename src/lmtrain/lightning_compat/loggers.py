"""Lightning's private API for what reaches the loggers, and when (part of lmtrain.lightning_compat,
whose rules it follows; tests/test_lightning_compat.py tests each use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer


def log_finished_train_step(trainer: Trainer) -> None:
    """Send the metrics of the training step that just ended to the loggers, from a callback's
    `on_train_batch_end`, as Lightning does itself once every callback's hook has returned.

    Buys: a run that stops in `on_train_batch_end` (preemption saves and raises there) keeps
    that step's row in every logger; its resume starts at the next step and never logs it.
    Under DDP it may all-reduce synced metrics: every rank calls it at the same step. Public
    alternative: none (`LightningModule.log` only stores values; the connector sends them).
    """
    trainer._logger_connector.update_train_step_metrics()


def write_logs_also_after(trainer: Trainer, steps: Callable[[Trainer, int], bool]) -> None:
    """Make `trainer`'s loggers also write after every training step `steps(trainer, step)`
    names (`step` counted from 1: the step in progress), besides every `log_every_n_steps`;
    during training `steps` alone decides for a stop (`trainer.should_stop`).

    Buys: the last step's row (`models.metrics.loggers_write_after`) when `max_steps` or the
    last epoch's end is not a multiple of `log_every_n_steps`. Lightning writes the module's
    logged values, and its LearningRateMonitor and DeviceStatsMonitor theirs, only when its
    logger connector's `should_update_logs` says so (every `log_every_n_steps`, or stopping):
    the last step's values were logged, then dropped. Once per step as before: this widens
    that one test, during training only, and `log_every_n_steps=0` still writes no row.
    And no stale row: Lightning asks again after every callback's `on_train_batch_end`, where
    its Timer (`max_time`) may just have set `should_stop`, and wrote the values an earlier
    step logged; `steps` answers as it did when the step began (`models.metrics.StepDecision`).
    Public alternative: none (setting `trainer.should_stop` would also run a validation there).
    """
    connector = trainer._logger_connector
    if getattr(connector, "also_after", None) is steps:
        return  # a second fit of the same Trainer and module

    class StepsLoggerConnector(type(connector)):  # type: ignore[misc]
        also_after = staticmethod(steps)

        @property
        def should_update_logs(self) -> bool:
            trainer = self.trainer
            if not trainer.training or trainer.log_every_n_steps == 0:
                return super().should_update_logs
            # Lightning's own count: the step in progress, before and after it steps.
            step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1
            return step % trainer.log_every_n_steps == 0 or self.also_after(trainer, step)

    connector.__class__ = StepsLoggerConnector


def drop_unset_anonymous(logger: Any) -> None:
    """Leave W&B's deprecated `anonymous` setting out of a WandbLogger's `wandb.init` arguments
    when nobody set it.

    Buys: Lightning 2.6 passes `anonymous=None` to every `wandb.init`, and W&B then warns on
    every run, the default `make train` included, that "The anonymous setting has no effect and
    will be removed", a setting no config of ours holds. Public alternative: none (WandbLogger
    builds the arguments into its private `_wandb_init` in `__init__`).
    """
    init = getattr(logger, "_wandb_init", None)
    if isinstance(init, dict) and "anonymous" in init and init["anonymous"] is None:
        del init["anonymous"]
