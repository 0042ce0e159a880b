"""The names and keys a run gets in MLflow and TensorBoard, as W&B names it
(`lmtrain.utils.wandb_run`): a multirun job after the overrides its sweep varies, grouped by its
sweep folder; a folder name within the filesystem's limits; the run config's keys flattened to
`a/b/c`, as Lightning flattens them for every logger. Split from `lmtrain.utils.logger_runs`,
which holds the two loggers. A sweep job's name and group (`sweep_job`, also of a run that
continues a sweep job's folder, `resume=<sweep>/<n>`) are `lmtrain.utils.sweep_job_names`'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from lmtrain.utils.sweep_job_names import sweep_job as sweep_job  # lmtrain.utils.logger_runs'

# A folder name's limit on common filesystems, in bytes.
MAX_FOLDER_NAME_BYTES = 255


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
