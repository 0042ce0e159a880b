"""The checks around a sweep: what it may start, which files it wrote, what result it keeps.

Before a sweep starts, `refuse_sweep_that_cannot_start` checks what Hydra's sweepers and
launchers would only trace back on (an empty Optuna range, SLURM without `srun`). While it runs,
`file_stamp`s tell its files from an earlier sweep's in the same folder; after it, an Optuna
results file whose best value is not finite is withdrawn. Used by `sweep_outcome`'s callback;
kept apart from `sweep_jobs`, which reads the job folders back for the report.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import yaml
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, first_line

# The Optuna sweeper's best trial, written into the sweep folder after the last trial.
OPTUNA_RESULTS = "optimization_results.yaml"


def sweep_files(sweep_dir: Path) -> list[Path]:
    """The files whose change tells what a sweep did: its jobs' records, metrics and results."""
    return [
        *sweep_dir.glob("**/.hydra/config.yaml"),
        *sweep_dir.glob("**/metrics.json"),
        sweep_dir / OPTUNA_RESULTS,
    ]


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime in ns) of `path`, or zeros for a missing file."""
    try:
        stat = path.stat()
    except OSError:
        return (0, 0, 0)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def withdraw_results_without_best(results: Path) -> bool:
    """Remove the Optuna sweeper's results file when its best value is not finite.

    The sweeper writes `best_value` and `best_params` even when every trial failed or diverged
    (each scored `worst_value()`): a file that names "best" parameters no trial reached would
    be read as a result. Without it, a script that looks for the file finds none, and
    `lmtrain.report` still shows every trial. Returns whether it was removed.
    """
    try:
        best = yaml.safe_load(results.read_text()) if results.is_file() else None
        value = float(best["best_value"]) if isinstance(best, dict) else 0.0
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return False  # not the file, or a multi-objective one (its Pareto front, no best_value)
    if math.isfinite(value):
        return False
    results.unlink()
    return True


def refuse_sweep_that_cannot_start(config: DictConfig) -> None:
    """Raise LMTrainError, before any job, for a sweep that Hydra's plugins would end with a
    traceback: an Optuna range that is empty or a log range from 0 or below (refused when the
    sweeper builds it), or the SLURM launcher where there is no `srun` (not a SLURM cluster)."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    if launcher.endswith(".SlurmLauncher") and shutil.which("srun") is None:
        raise LMTrainError(
            "hydra/launcher=slurm submits jobs with SLURM, and this machine has no srun (not a "
            "SLURM cluster): run the command on a SLURM login node, or use "
            "hydra/launcher=slurm_local to run the jobs here"
        )
    if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
        params = config.hydra.sweeper.get("params") or {}
        named = {f"{key}={value}": f"hydra.sweeper.params.{key}" for key, value in params.items()}
        refuse_empty_search_ranges(named | {str(o): "" for o in config.hydra.overrides.task})


def refuse_empty_search_ranges(overrides: dict[str, str]) -> None:
    """Raise LMTrainError for the first override (`key=interval(...)`, shown as where it comes
    from) that Optuna cannot make a distribution of. Built as the sweeper builds them (the
    plugin's own function), so that the check and the sweeper cannot disagree; overrides Hydra
    cannot parse are left to the sweeper's own message."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:  # the plugin's own builder, so the check is what the sweeper does; private, so guarded
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )
    except ImportError:  # another plugin version: the sweeper reports bad ranges itself
        return

    for line, source in overrides.items():
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
        except HydraException:
            continue
        try:
            create_optuna_distribution_from_override(override)
        except (ValueError, TypeError) as err:
            where = f"{source}={line.split('=', 1)[1]}" if source else line
            raise LMTrainError(
                f"the search space {where} is not a range Optuna can sample "
                f"({first_line(err).rstrip('.')}):"
                " give interval(low, high) with low <= high, and tag(log, interval(low, high)) a "
                "low above 0"
            ) from None
