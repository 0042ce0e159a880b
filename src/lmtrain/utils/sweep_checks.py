"""The checks around a sweep: what it may start, which files it wrote, what result it keeps.

Before a sweep starts, `refuse_sweep_that_cannot_start` checks what Hydra's sweepers and
launchers would only trace back on (an empty Optuna range, no trials, a misspelt direction, a
max_failure_rate outside 0-1, SLURM without `srun`) or run other than asked without a word (a
`range()` or `glob()` of no values, a tag Optuna ignores, an interval on a grid). While
it runs, `file_stamp`s tell its files from an earlier sweep's in the same folder; after it, an
Optuna results file whose best value is not finite is withdrawn. Used by `sweep_outcome`'s callback;
kept apart from `sweep_jobs`, which reads the job folders back for the report.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import Problems
from lmtrain.utils.metric_names import check_metric_names
from lmtrain.utils.optuna_study import (
    refuse_intervals_on_a_grid,
    refuse_study_that_cannot_continue,
)
from lmtrain.utils.slurm_launcher_checks import refuse_slurm_launcher_problems
from lmtrain.utils.sweep_kinds import (
    refuse_globs_without_options,
    refuse_sweep_kinds_the_sweeper_lacks,
    sweeper_kind,
)
from lmtrain.utils.sweep_overrides import (
    parsed_sweeps,
    refuse_shared_job_folders,
    refuse_unknown_search_keys,
)
from lmtrain.utils.sweep_split import refuse_sweep_split_across_folders

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


def refuse_misspelt_optimized_metric(config: DictConfig) -> None:
    """`optimized_metric` spelt another way, or one letter off a metric lmtrain logs, as each
    job's config checks refuse it (`check_metric_names`): once, before any job, not in every job
    (under SLURM, after each had queued)."""
    problems = Problems()
    ours = OmegaConf.select(config, "model._target_") == "lmtrain.models.module.CausalLMModule"
    check_metric_names({}, config.get("optimized_metric"), problems, ours)
    problems.raise_if_any()


def refuse_sweep_that_cannot_start(config: DictConfig) -> None:
    """Raise LMTrainError, before any job, for a sweep that Hydra's plugins would end with a
    traceback: an Optuna range that is empty or a log range from 0 or below (refused when the
    sweeper builds it), no trials, or the SLURM launcher where there is no `srun` (not a SLURM
    cluster), an interval() under the basic sweeper or a glob() under Optuna
    (`lmtrain.utils.sweep_kinds`), several objectives or a direction Optuna does not know, a
    max_failure_rate outside 0-1 (on_multirun_start runs before Hydra builds the sweeper), a
    storage that cannot be opened (`lmtrain.utils.optuna_study`), a searched key the config (or
    an option of a swept group) lacks; what they would run without a word, other than asked: a
    `range()` or `glob()` without values, a tag the Optuna sweeper ignores, an interval on the
    grid sampler, SLURM sizes swept (`lmtrain.utils.slurm_launcher_checks`), jobs sharing a folder
    (`lmtrain.utils.sweep_overrides`); and a sweep whose jobs would leave its folder
    (`lmtrain.utils.sweep_split`)."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    if sweep_dir.exists() and not sweep_dir.is_dir():  # Hydra's makedirs: FileExistsError
        raise LMTrainError(
            f"hydra.sweep.dir={sweep_dir} is a file, not a folder: pass a new folder for the sweep"
        )
    sweeper = config.hydra.sweeper
    # As typed: `+callbacks.x.job=${hydra:job.num}` cannot be resolved outside a job.
    params = OmegaConf.to_container(sweeper, resolve=False).get("params") or {}  # type: ignore[union-attr]
    typed = OmegaConf.to_container(config.hydra.overrides, resolve=False)["task"]  # type: ignore[index]
    named = {f"{key}={value}": f"hydra.sweeper.params.{key}" for key, value in params.items()}
    overrides = named | {str(o): "" for o in typed}
    refuse_sweep_kinds_the_sweeper_lacks(sweeper, overrides)  # interval on a grid, Optuna glob
    refuse_ranges_without_values(overrides)  # any sweeper: the basic one launches no job
    refuse_globs_without_options(overrides)  # the same for a glob() that names no option
    swept = [override.key_or_group for override, _ in parsed_sweeps(overrides)]
    refuse_slurm_launcher_problems(config, swept)
    refuse_misspelt_optimized_metric(config)  # each job refused it, after queueing
    optuna = sweeper_kind(sweeper) == "optuna"
    refuse_unknown_search_keys(config, overrides, optuna)
    refuse_shared_job_folders(config, overrides)
    if optuna:
        refuse_optuna_without_trials(sweeper)
        refuse_optuna_direction(sweeper.get("direction"))
        refuse_failure_rate_outside_0_1(sweeper)
        refuse_tags_optuna_ignores(overrides)
        refuse_empty_search_ranges(overrides)
        refuse_intervals_on_a_grid(sweeper, overrides)
        refuse_study_that_cannot_continue(sweeper, overrides)
    refuse_sweep_split_across_folders(config)  # last: it composes each job's config


def refuse_empty_search_ranges(overrides: dict[str, str]) -> None:
    """Raise LMTrainError for the first override (`key=interval(...)`, shown as where it comes
    from) that Optuna cannot make a distribution of. Built as the sweeper builds them (the
    plugin's own function), so that the check and the sweeper cannot disagree; overrides Hydra
    cannot parse are left to the sweeper's own message; anything else the plugin raises (its
    bare asserts: a choice of lists, a shuffled range) is one line too, not a traceback that
    skips the checks after this one."""
    try:  # the plugin's own builder, so the check is what the sweeper does; private, so guarded
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )
    except ImportError:  # another plugin version: the sweeper reports bad ranges itself
        return

    for override, shown in parsed_sweeps(overrides):
        try:
            create_optuna_distribution_from_override(override)
        except (ValueError, TypeError) as err:
            raise LMTrainError(
                f"the search space {shown} is not a range Optuna can sample "
                f"({first_line(err).rstrip('.')}):"
                " give interval(low, high) with low <= high, and tag(log, interval(low, high)) a "
                "low above 0"
            ) from None
        except Exception as err:  # the plugin's bare asserts, its NotImplementedError
            text, kind = first_line(err).rstrip("."), type(err).__name__
            why = "an assert in the plugin" if text == kind else f"{kind}: {text}"
            raise LMTrainError(
                f"the search space {shown} is not one the Optuna sweeper can search "
                f"({why}): give choice(a, b, ...) of plain values, "
                "range(start, stop[, step]) or interval(low, high)"
            ) from None


# The tags the Optuna sweeper reads (hydra_optuna_sweeper/_impl.py): `log`, on interval() only.
# `int` is no tag there: int(interval(...)) is Hydra's cast, which the sweeper reads by type.
OPTUNA_TAGS = ("log",)


def refuse_ranges_without_values(overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a `range(start, stop[, step])` sweep with no value, as Python's
    range (range(1,1), range(5,1)): the basic sweeper launched no job and exited 0, and the
    Optuna sweeper, which reads range(a,b) as a to b inclusive, ran every trial with the start."""
    from hydra.core.override_parser.types import RangeSweep

    for override, shown in parsed_sweeps(overrides):
        value = override.value()
        if not isinstance(value, RangeSweep):
            continue
        if value.step == 0:  # Hydra's basic sweeper ends in Python's ValueError, a traceback
            raise LMTrainError(
                f"the sweep {shown} has a step of 0: give a positive step to count up, a "
                "negative one to count down, or one value without range()"
            )
        try:
            empty = next(iter(value.range()), None) is None
        except (ValueError, TypeError):  # anything else: Hydra's own message
            continue
        if empty:
            raise LMTrainError(
                f"the sweep {shown} has no values (Hydra's range(start, stop, step) ends before "
                "stop, as Python's does): give a stop past the start, a negative step to count "
                "down, or one value without range()"
            )


def refuse_tags_optuna_ignores(overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a tag the Optuna sweeper does not read: it only looks for `log` on
    an interval(), so a misspelt tag(lgo, interval(...)), or tag(log, range(...)), searched a
    linear scale and the search exited 0 as if it had searched the one asked for."""
    from hydra.core.override_parser.types import IntervalSweep

    for override, shown in parsed_sweeps(overrides):
        value = override.value()
        is_interval = isinstance(value, IntervalSweep)
        tags = sorted(getattr(value, "tags", None) or ())
        unknown = [tag for tag in tags if tag not in OPTUNA_TAGS or not is_interval]
        if not unknown:
            continue
        kind = "" if is_interval else f" on {type(value).__name__.removesuffix('Sweep').lower()}()"
        hint = ", int(interval(low, high)) for integers" if "int" in unknown else ""
        raise LMTrainError(
            f"the search space {shown} has the tag {unknown[0]}, which the Optuna sweeper "
            f"ignores{kind} (its only tag: {', '.join(OPTUNA_TAGS)}, on interval()): give "
            f"tag(log, interval(low, high)) for a log scale{hint}, or no tag"
        )


def refuse_optuna_without_trials(sweeper: DictConfig) -> None:
    """Raise LMTrainError for n_trials or n_jobs below 1: the Optuna sweeper ran no trial and
    then asked for the best one ("No trials are completed yet"), or divided by its 0 trials."""
    runs = {"n_trials": "runs no trial", "n_jobs": "asks Optuna for no trial at a time"}
    for key, what in runs.items():
        try:
            count = int(sweeper.get(key, 1))
        except (TypeError, ValueError):
            continue  # Hydra's config schema reports a value that is not a number
        if count < 1:
            raise LMTrainError(
                f"hydra.sweeper.{key}={count} {what}, and the Optuna sweeper needs one to "
                f"report a best trial: give hydra.sweeper.{key} of 1 or more"
            )


def refuse_optuna_direction(directions: object) -> None:
    """Raise LMTrainError for a `hydra.sweeper.direction` Optuna does not take: several (each
    job returns one value), or a word other than minimize/maximize (`minimise`, `Maximize`),
    which Optuna refused with a traceback once the sweep's folder and ledger were made."""
    given = list(directions) if isinstance(directions, ListConfig) else [directions]
    # The plugin's schema default is its Direction enum, which the sweeper reads by name.
    names = [d.name if isinstance(d, Enum) else d for d in given]
    if len(names) > 1:
        raise LMTrainError(
            f"hydra.sweeper.direction={names} asks for {len(names)} objectives, and each job "
            "returns one value (optimized_metric): pass one direction, e.g. "
            "hydra.sweeper.direction=minimize"
        )
    if not names or names[0] not in ("minimize", "maximize"):
        shown = names[0] if names else "[]"
        raise LMTrainError(
            f"hydra.sweeper.direction={shown} is not a direction Optuna knows: pass "
            "hydra.sweeper.direction=minimize (a lower optimized_metric is better, as a loss) or "
            "hydra.sweeper.direction=maximize, in lower case"
        )


def refuse_failure_rate_outside_0_1(sweeper: DictConfig) -> None:
    """Raise LMTrainError for a `hydra.sweeper.max_failure_rate` that is no share of trials: the
    sweeper asserts 0 <= rate <= 1 when Hydra builds it, a bare AssertionError. Hydra builds
    it after on_multirun_start, where this runs."""
    try:
        rate = float(sweeper.get("max_failure_rate", 0.0))
    except (TypeError, ValueError):
        return  # Hydra's config schema reports a value that is not a number
    if not 0.0 <= rate <= 1.0:  # NaN too
        raise LMTrainError(
            f"hydra.sweeper.max_failure_rate={rate:g} is not a share of trials: give one from 0 "
            "(end the study at the first trial that raises) to 1 (never end it for failures)"
        )
