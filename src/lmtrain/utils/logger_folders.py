"""Where a sweep job's CSV and TensorBoard loggers wrote, from its saved config, for the report.

`lmtrain.report` read a job's curve only at `csv/metrics.csv` and `tensorboard/`, the folders
configs/logger/*.yaml give: a sweep run with `logger.csv.version=v` (or another CSV name, or a
TensorBoard name or version) got "no val/loss curve" and no plot (red team log27). Lightning's
loggers write to `<save_dir>/<name>/<version>`, and the job's `.hydra/config.yaml` holds those
settings as typed, unresolved (`save_dir: ${paths.output_dir}`); they are resolved here with
OmegaConf, the job folder standing for `paths.output_dir` (Hydra's runtime.output_dir: the folder
the job ran in, wherever the sweep is now), and a relative folder taken from the job's launch
directory (`hydra.runtime.cwd`), where Lightning found it.

The config is the folder's, not to be trusted: a setting that does not resolve to text (or to a
version number) is ignored, and the report reads the default folder and warns as before. Nothing
outside the job folder is read unless its config names it there, and only files that exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.utils.logger_names import folder_name
from lmtrain.utils.sweep_job_names import RECORD, read_hydra, saved_sweep_job

# lmtrain's TensorBoardLogger (under both module paths that configs and saved folders name): its
# `version: null` is the sweep job's name (lmtrain.utils.tensorboard_run), not a version_N.
OWN_TENSORBOARD = (
    "lmtrain.utils.logger_runs.TensorBoardLogger",
    "lmtrain.utils.tensorboard_run.TensorBoardLogger",
)
FOLDERS = ("csv", "tensorboard")  # the kinds whose folder is <save_dir>/<name>/<version>
UNREADABLE = object()  # a setting that does not resolve: the entry's folder is not known


def logger_kind(entry: Any) -> str:
    """The kind of logger (`wandb`, `csv`, `tensorboard`, `mlflow`, ...) a saved config's entry
    makes, from its `_target_` class's name ("" for none): lmtrain's subclasses end like
    Lightning's (ResumableCSVLogger)."""
    target = entry.get("_target_") if isinstance(entry, Mapping) else None
    name = str(target or "").rsplit(".", 1)[-1].lower()
    for kind in ("wandb", "csv", "tensorboard"):
        name = kind if name.endswith(f"{kind}logger") else name
    return name.removesuffix("logger") or name


def logger_folders(job: Path) -> dict[str, list[Path]]:
    """Each CSV logger's folder (of metrics.csv) and each TensorBoard logger's (of event files,
    its subfolders included) that the job's saved config names, in its order, by kind; a kind
    is absent when no entry of it gives a folder (the report then reads the default one)."""
    config = saved_config(job)
    loggers = setting(config, "logger", None)
    if not isinstance(loggers, DictConfig):
        return {}
    runtime = (read_hydra(job / RECORD / "hydra.yaml") or {}).get("runtime")
    launched = runtime.get("cwd") if isinstance(runtime, Mapping) else None
    task_name = str(setting(config, "task_name", ""))
    found: dict[str, list[Path]] = {}
    for key in loggers:
        entry = setting(loggers, key, None)
        if not isinstance(entry, DictConfig):
            continue
        kind = logger_kind({"_target_": setting(entry, "_target_", None)})
        folder = log_folder(entry, kind, job, launched, task_name) if kind in FOLDERS else None
        if folder is not None:
            found.setdefault(kind, []).append(folder)
    return found


def saved_config(job: Path) -> DictConfig | None:
    """The job's `.hydra/config.yaml`, its `paths.output_dir` the job folder; None where it
    cannot be read (the report has warned of that already)."""
    try:
        config = OmegaConf.load(job / RECORD / "config.yaml")
        if not isinstance(config, DictConfig):
            return None
        # Absolute: a relative save_dir is joined to the training's launch folder, not ours.
        output_dir = str(job.resolve())
        OmegaConf.update(config, "paths.output_dir", output_dir, merge=False, force_add=True)
    except (OSError, ValueError, TypeError, yaml.YAMLError, OmegaConfBaseException):
        return None  # unreadable, not YAML, `paths` no mapping: the default folders
    return config


def setting(entry: Any, key: Any, default: Any) -> Any:
    """`entry[key]` resolved, `default` when it is not set, UNREADABLE when it does not resolve
    (`${hydra:...}`, which only a running job knows, or a broken interpolation)."""
    if not isinstance(entry, DictConfig):
        return UNREADABLE
    try:
        return entry.get(key, default)
    except (OmegaConfBaseException, ValueError, TypeError, KeyError):
        return UNREADABLE


def log_folder(
    entry: DictConfig, kind: str, job: Path, launched: Any, task_name: str
) -> Path | None:
    """The folder Lightning's logger of `entry` wrote to, `<save_dir>/<name>/<version>`, or
    None where the settings do not say (not text, unresolved, relative with no launch folder)."""
    save_dir = setting(entry, "save_dir", None)
    name = setting(entry, "name", "lightning_logs")  # Lightning's default; null or "": none
    version = setting(entry, "version", None)
    numbered = isinstance(version, int) and not isinstance(version, bool)
    if not isinstance(save_dir, str) or not (name is None or isinstance(name, str)):
        return None
    if not (version is None or numbered or isinstance(version, str)):
        return None
    if kind == "tensorboard":  # TensorBoard expands `~` and $VARS, the CSV logger does not
        save_dir = os.path.expanduser(os.path.expandvars(save_dir))
    root = Path(save_dir)
    if not root.is_absolute():
        if not isinstance(launched, str):
            return None
        root = Path(launched) / root
    root = root / (name or "")
    if numbered:
        return root / f"version_{version}"
    if isinstance(version, str):
        return root / version
    target = str(setting(entry, "_target_", ""))
    if kind == "tensorboard" and target in OWN_TENSORBOARD:
        return own_tensorboard_folder(root, job, task_name)
    return latest_version(root)


def own_tensorboard_folder(root: Path, job: Path, task_name: str) -> Path:
    """lmtrain's TensorBoard folder with `version: null`: `<root>/<job name>` (the sweep job's
    swept overrides), or `root` itself for a single run. In the job folder, `root` is read whole,
    as before this module: the job's own, whatever name a resume gave its events there."""
    inside = root.resolve() == job.resolve() or job.resolve() in root.resolve().parents
    sweep_job = None if inside else saved_sweep_job(job)
    return root / folder_name(sweep_job.name(task_name)) if sweep_job is not None else root


def latest_version(root: Path) -> Path:
    """The `version_<n>` folder Lightning's logger with `version: null` wrote to last: the
    highest n (each new run takes the next)."""
    try:
        numbers = [
            int(path.name.removeprefix("version_"))
            for path in root.glob("version_*")
            if path.name.removeprefix("version_").isdigit() and path.is_dir()
        ]
    except OSError:
        numbers = []
    return root / f"version_{max(numbers, default=0)}"
