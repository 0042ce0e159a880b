"""Instantiate the callbacks and loggers named in a config group.

Both groups are dicts of `name: {_target_: ...}` so that an experiment can override or drop one
entry (`callbacks.rich_progress_bar=null`) without restating the others.
"""

from __future__ import annotations

import logging

import hydra
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _instantiate_group(cfg: DictConfig | None, kind: str) -> list:
    objects = []
    for name, entry in (cfg or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s <%s>", kind, entry._target_)
            objects.append(hydra.utils.instantiate(entry))
        elif entry is not None:
            raise TypeError(f"{kind}s.{name} has no _target_: {entry}")
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_group(cfg, "callback")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_group(cfg, "logger")
