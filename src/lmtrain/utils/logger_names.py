"""The names and keys a run gets in MLflow and TensorBoard, as W&B names it
(`lmtrain.utils.wandb_run`): a multirun job after the overrides its sweep varies, grouped by its
sweep folder; a folder name within the filesystem's limits; the run config's keys flattened to
`a/b/c`, as Lightning flattens them for every logger. Split from `lmtrain.utils.logger_runs`,
which holds the two loggers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lmtrain.utils.wandb_run import job_name

# A folder name's limit on common filesystems, in bytes.
MAX_FOLDER_NAME_BYTES = 255


def sweep_job(run_cfg: DictConfig) -> tuple[str, str] | None:
    """(name, group) of a multirun job, as W&B has them; None for a single run."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return None
    group = f"{run_cfg.task_name}/{Path(hydra.sweep.dir).name}"
    return job_name(hydra, run_cfg.task_name), group


def folder_name(text: str) -> str:
    """`text` as one folder name: no path separator, within the filesystem's length limit."""
    name = text.replace("/", "_").replace("\\", "_").lstrip(".") or "_"
    if len(name.encode()) <= MAX_FOLDER_NAME_BYTES:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_FOLDER_NAME_BYTES - 9].decode(errors="ignore") + "-" + digest


def flat_params(params: Mapping[Any, Any], parent: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` as `{"a/b": 1}`, the keys Lightning's loggers log (its own flattening,
    `_flatten_dict`, is private)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{parent}/{key}" if parent else str(key)
        if isinstance(value, Mapping):
            flat.update(flat_params(value, name))
        else:
            flat[name] = value
    return flat
