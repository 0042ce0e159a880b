"""The folder Hydra is about to make for a run (or a sweep), refused before it makes it.

Hydra creates the run folder and writes `.hydra/`, the log and (through train's claim) `.lock`
into it before the task starts, so a folder the task refuses is already on disk by then. Three
kinds are refused here, by the Hydra callbacks of all four entry points (`ClaimRunFolder`,
`ResumeRun`, `RefuseForeignRunFolder`), in one line and before anything is written:

- A folder that starts with `~` (`hydra.run.dir='~/run'`, `paths.log_dir='~/logs'`). Hydra does
  not expand `~`: it made `./~/run`, while checks that expanded it looked at `$HOME/run`, so
  generate and eval replaced a training run's `.hydra/` and `resume=` then refused that run.
  `resume=~/run` is another matter: lmtrain reads that value and expands it itself.
- A folder whose path holds `${` as text (`PROJECT_ROOT='/data/r${x}'`), which Hydra resolves
  again once the folder is in its config.
- An empty `paths.*` folder (`PROJECT_ROOT=` set but empty, `paths.log_dir=''`): the run folder
  went under the file system's root (`/logs/<task>/runs/...`). The config checks refuse it
  inside the task too, for a config composed in Python that no callback sees.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError

# The `paths` folders (configs/paths/default.yaml) that name where everything else goes.
PATH_KEYS = ("paths.root_dir", "paths.data_dir", "paths.log_dir")
# What a run folder is built from (configs/hydra/default.yaml): the first that starts with `~`
# is the setting to name, rather than the long folder built from it.
FOLDER_SOURCES = ("paths.root_dir", "paths.log_dir")
ENV_READ = re.compile(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)")


def refuse_unmade_folder(config: DictConfig, key: str) -> None:
    """Raise LMTrainError when the folder `key` (`hydra.run.dir`, or `hydra.sweep.dir` for a
    sweep) names cannot be the one the command means: see the module's docstring. Call it before
    Hydra makes the folder (a Hydra callback's `on_run_start` / `on_multirun_start`)."""
    refuse_empty_paths(config)
    folder = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    if folder is None:  # a `${...}` that does not resolve: the task name checks report it
        return
    refuse_home_prefix(config, key, str(folder))
    refuse_interpolation_text(config, key, str(folder))


def refuse_interpolation_text(config: DictConfig, key: str, folder: str) -> None:
    """Raise LMTrainError when `folder` holds `${` as text (from an environment variable,
    `PROJECT_ROOT='/data/r${x}'`): Hydra stores the run folder in its config, where that text
    is read again as an interpolation, and its log setup ended in a traceback after making the
    folder (red team r_path31)."""
    if "${" not in folder:
        return
    named, value, env = setting_holding(config, key, folder, lambda text: "${" in text)
    named = f"{named} (from {env})" if env else named
    raise LMTrainError(
        f"{named}={value!r} holds '${{', which Hydra reads as an interpolation in the run "
        "folder it makes: pass a folder whose path has no '${'"
    )


def setting_holding(
    config: DictConfig, key: str, folder: str, holds: Callable[[str], bool]
) -> tuple[str, str, str | None]:
    """The setting to name for a problem (`holds`) of `folder`, the value of `key`: the first
    of FOLDER_SOURCES it was built from that `holds` too (`paths.log_dir='~/logs'`), else
    `key`; its value; and the set environment variable it was read from whose value `holds`,
    if any (`PROJECT_ROOT`)."""
    named, value = key, folder
    for source in FOLDER_SOURCES:
        given = OmegaConf.select(config, source, throw_on_resolution_failure=False)
        if isinstance(given, str) and holds(given) and folder.startswith(given):
            named, value = source, given
            break
    env = [name for name in read_env_vars(config, named) if holds(os.environ[name])]
    return named, value, env[0] if env else None


def refuse_home_prefix(config: DictConfig, key: str, folder: str) -> None:
    """Raise LMTrainError when `folder` (the value of `key`) starts with `~`, naming the setting
    it came from (`paths.log_dir='~/logs'`) and the full path to pass instead."""
    if not folder.startswith("~"):
        return
    named, value, env = setting_holding(config, key, folder, lambda text: text.startswith("~"))
    expanded = os.path.expanduser(value)  # `~user` of no known user stays as it is
    instead = f", e.g. {expanded}" if expanded != value else ""
    written = f"./{folder}" if named == key else f"{key}=./{folder}"
    if env:  # PROJECT_ROOT='~/proj' (quoted, so the shell left it): name the variable
        named, instead = f"{named} (from {env})", f", e.g. {env}={expanded}"
    raise LMTrainError(
        f"{named}={value!r} starts with ~, which Hydra does not expand (it would write "
        f"{written}): pass the full path{instead}"
    )


def refuse_empty_paths(config: DictConfig) -> None:
    """Raise LMTrainError for an empty `paths.*` folder, naming the environment variable it was
    read from when that is set but empty (`PROJECT_ROOT=`, configs/paths/default.yaml)."""
    for key in PATH_KEYS:
        value = OmegaConf.select(config, key, throw_on_resolution_failure=False)
        if not isinstance(value, str) or value.strip():
            continue
        empty_vars = [name for name in read_env_vars(config, key) if not os.environ[name].strip()]
        if empty_vars:
            name = empty_vars[0]
            raise LMTrainError(
                f"{key}={value!r} names no folder: it is read from the environment variable "
                f"{name}, which is set but empty (run folders would go under the file system's "
                f"root): unset {name}, or set it to a folder, or pass {key}=<folder>"
            )
        raise LMTrainError(
            f"{key}={value!r} names no folder (what goes under it would start at the file "
            "system's root): leave it as configured, or pass a folder"
        )


def read_env_vars(config: DictConfig, key: str) -> list[str]:
    """The set environment variables `key`'s unresolved value reads (`${oc.env:PROJECT_ROOT,.}`)."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent, throw_on_resolution_failure=False)
    if not isinstance(node, DictConfig):
        return []
    raw = OmegaConf.to_container(node, resolve=False).get(leaf)  # type: ignore[union-attr]
    return [name for name in ENV_READ.findall(str(raw)) if name in os.environ]
