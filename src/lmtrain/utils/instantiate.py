"""Instantiate the callbacks and loggers named in a config group.

Both groups are dicts of `name: {_target_: ...}` so that an experiment can override or drop one
entry (`callbacks.rich_progress_bar=null`) without restating the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import hydra
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, find_cause, first_line
from lmtrain.utils.logger_runs import (
    is_mlflow_entry,
    is_tensorboard_entry,
    mlflow_kwargs,
    tensorboard_kwargs,
)
from lmtrain.utils.wandb_run import is_wandb_entry, wandb_kwargs

log = logging.getLogger(__name__)


def _instantiate_group(
    cfg: DictConfig | None,
    kind: str,
    extra_kwargs: Callable[[DictConfig], dict[str, Any]] | None = None,
) -> list:
    objects = []
    for name, entry in (cfg or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s <%s>", kind, entry._target_)
            kwargs = extra_kwargs(entry) if extra_kwargs else {}
            objects.append(hydra.utils.instantiate(entry, **kwargs))
        elif entry is not None:
            raise TypeError(f"{kind}s.{name} has no _target_: {entry}")
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, "callback")


def instantiate_loggers(
    cfg: DictConfig | None, run_cfg: DictConfig | None = None, resuming: bool = False
) -> list[Logger]:
    """The loggers of `cfg`; given the run's config, W&B, MLflow and TensorBoard ones also get
    the run's name and a sweep's group (lmtrain.utils.wandb_run, lmtrain.utils.logger_runs), and
    `resuming` continues the run folder's W&B and MLflow runs."""

    def extra_kwargs(entry: DictConfig) -> dict[str, Any]:
        if run_cfg is None:
            return {}
        if is_wandb_entry(entry):
            return wandb_kwargs(entry, run_cfg, resuming)
        if is_mlflow_entry(entry):
            return mlflow_kwargs(entry, run_cfg, resuming)
        if is_tensorboard_entry(entry):
            return tensorboard_kwargs(entry, run_cfg)
        return {}

    return _instantiate_group(cfg, "logger", extra_kwargs)


def instantiate_trainer(cfg: DictConfig, **kwargs: Any) -> Trainer:
    """The Trainer of `cfg` (the trainer group); Lightning's refusal of a setting (no GPU for
    `accelerator: gpu`, more devices than there are, an unknown strategy) is one line."""
    try:
        return hydra.utils.instantiate(cfg, **kwargs)
    except Exception as err:
        refusal = find_cause(err, MisconfigurationException)
        if refusal is None:
            raise
        raise LMTrainError(
            f"the trainer settings were refused ({first_line(refusal)}): check trainer.accelerator,"
            " trainer.devices, trainer.precision and trainer.strategy (trainer=cpu runs anywhere)"
        ) from None
