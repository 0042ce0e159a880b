"""A run folder built from a `${...}` that does not resolve, refused in one line.

Hydra resolves `hydra.run.dir` (`hydra.sweep.dir` for a sweep) to make the folder, after its
callbacks' `on_run_start`. An unset variable in a path (`paths.root_dir=${oc.env:SCRATCH}/lm`, a
cluster's variable in configs/local/default.yaml, unset on a laptop) made the callbacks' reads
raise, which Hydra turns into a warning, and then Hydra's own read ended in a 50 to 70 line
traceback. The callbacks of all four entry points (`ClaimRunFolder`, `RefuseForeignRunFolder`)
call `refuse_unresolved_folder` before they read the folder, and turn any other `${...}` that
fails in their reads into the same kind of line (`error_line`), before anything is made.

The line names the setting the failure starts at (`paths.root_dir`, not the run folder built
from it), its value as written, and for `${oc.env:NAME}` of an unset variable, that variable.
"""

from __future__ import annotations

import os
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import refuse_bad_task_name
from lmtrain.utils.run_dir_checks import ENV_READ

# `${paths.log_dir}`: a reference to another setting (not a resolver such as `${oc.env:X}`).
REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")


def refuse_unresolved_folder(config: DictConfig, key: str) -> None:
    """Raise LMTrainError when the folder `key` names (`hydra.run.dir`, `hydra.sweep.dir`) does
    not resolve, naming the setting the failure starts at (see the module's docstring)."""
    found = unresolved_source(config, key)
    if found is not None:
        raise LMTrainError(unresolved_line(config, *found))


def unresolved_source(config: DictConfig, key: str) -> tuple[str, BaseException] | None:
    """The setting that `key` fails to resolve at, with its error: `key`, or down the
    `${other.key}` references that fail too, the last of them; None when `key` resolves."""
    error = resolution_error(config, key)
    if error is None:
        return None
    seen, named = {key}, key
    while True:
        failing = [
            (ref, err)
            for ref in REFERENCE.findall(raw_value(config, named))
            if ref not in seen and (err := resolution_error(config, ref)) is not None
        ]
        if not failing:
            return named, error
        named, error = failing[0]
        seen.add(named)


def refuse_unnamed_folder(config: DictConfig, key: str) -> None:
    """Raise LMTrainError when the folder `key` names cannot be built: a key it is built from
    removed (`~task_name`, named as such by `refuse_bad_task_name`), or a `${...}` that does
    not resolve (`refuse_unresolved_folder`)."""
    try:
        refuse_bad_task_name(config)
    except OmegaConfBaseException as err:  # task_name=${oc.env:UNSET}
        raise LMTrainError(error_line(err, config, key).removeprefix("error: ")) from None
    refuse_unresolved_folder(config, key)


def error_line(err: BaseException, config: DictConfig, key: str) -> str:
    """The `error:` line for `err`, raised in a Hydra callback that checks the folder
    `key` names: an LMTrainError's own; for OmegaConf's failure to resolve a setting, the one
    the folder fails at (`task_name=${oc.env:UNSET}`, read by the task name check), else the
    setting the error names."""
    if not isinstance(err, OmegaConfBaseException):
        return f"error: {err}"
    found = unresolved_source(config, key)
    if found is not None:
        return f"error: {unresolved_line(config, *found)}"
    named = getattr(err, "full_key", None) or "a setting"
    return (
        f"error: {named} cannot be resolved ({first_line(err)}): fix the ${{...}} it holds, or "
        "pass a plain value"
    )


def unresolved_line(config: DictConfig, key: str, err: BaseException) -> str:
    """The line for `key`, whose value fails with `err`: the value as written (the command may
    not have typed it: configs/local/default.yaml) and the unset variable it reads, if any."""
    raw = raw_value(config, key)
    unset = [name for name in ENV_READ.findall(raw) if name not in os.environ]
    hint = f"set {unset[0]}, or" if unset else "fix the ${...} it holds, or"
    return f"{key}={raw!r} cannot be resolved ({first_line(err)}): {hint} pass a plain value"


def as_typed(overrides: Any) -> list[str]:
    """Hydra's record of overrides (`hydra.overrides.hydra`, `.task`) as typed: iterating the
    record resolves each one's `${...}`, and one that fails (`lr=${oc.env:UNSET}`) raised."""
    if isinstance(overrides, ListConfig):
        overrides = OmegaConf.to_container(overrides, resolve=False)
    return [str(o) for o in overrides or ()]


def resolution_error(config: DictConfig, key: str) -> OmegaConfBaseException | None:
    """OmegaConf's error reading `key` of `config`, None when it resolves (or is not there)."""
    try:
        OmegaConf.select(config, key)
    except OmegaConfBaseException as err:
        return err
    return None


def raw_value(config: DictConfig, key: str) -> str:
    """`key`'s value as written (`${paths.root_dir}/logs`), "" when there is none."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(config, parent, throw_on_resolution_failure=False) if parent else config
    if not isinstance(node, DictConfig):
        return ""
    value = OmegaConf.to_container(node, resolve=False).get(leaf)  # type: ignore[union-attr]
    return "" if value is None else str(value)
