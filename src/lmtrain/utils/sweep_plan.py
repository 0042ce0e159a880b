"""A sweep's own plan, from the config it saved (`multirun.yaml`): its jobs, and the keys it sweeps.

Job folders tell only the jobs that ran. A sweep stopped by a preemption (`run_for_sweeper`
re-raises it: the process ends, and the rest of the sweep with it) left the later jobs without
a folder: the report counted only the jobs that ran, and a swept key whose other values never
ran read as "same in every job" (red team rev_sweep21). Hydra's basic sweeper saves the sweep's
config before its first job; SweepOutcome saves it for the Optuna sweeper. From it the basic
sweeper's job list is rebuilt as the sweeper built it (`BasicSweeper.split_arguments`), and
every key that a sweep override or the sweeper's `params` names is a swept key.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from lmtrain.utils.entry_module import entry_module_of
from lmtrain.utils.sweep_ledger import INTERRUPTED, record_cut_short, record_job

MULTIRUN_FILE = "multirun.yaml"


def saved_sweep(sweep_dir: Path) -> DictConfig | None:
    """The sweep's config as saved in `<sweep folder>/multirun.yaml` (None: none, or damaged)."""
    try:
        config = OmegaConf.load(sweep_dir / MULTIRUN_FILE)
    except Exception:  # OSError, YAML errors: no plan, the folders alone tell
        return None
    return config if isinstance(config, DictConfig) else None


def sweep_arguments(config: DictConfig) -> list[str]:
    """The overrides the sweeper parses: its `params`, then the command line's, as it does
    (unresolved: a value may name `${hydra:...}`, which only a running Hydra resolves)."""
    params, task = (raw(config, key) for key in ("hydra.sweeper.params", "hydra.overrides.task"))
    arguments = [f"{key}={value}" for key, value in (params or {}).items()]
    return arguments + [str(o) for o in task or []]


def raw(config: DictConfig, key: str) -> Any:
    """`key` of `config` as saved, its interpolations unresolved (None: missing)."""
    node = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node


def is_basic_sweep(config: DictConfig) -> bool:
    target = str(raw(config, "hydra.sweeper._target_") or "")
    return target.endswith("BasicSweeper")


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, by job number, as Hydra's basic sweeper makes them; None for
    another sweeper (Optuna samples each trial), or arguments that cannot be parsed here (a
    `glob(...)` of a config group needs Hydra's config loader)."""
    if not is_basic_sweep(config):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides(sweep_arguments(config))
        batches = BasicSweeper.split_arguments(overrides, None)
    except Exception:  # Hydra's parse errors; the sweep itself parsed them with more context
        return None
    return [list(job) for batch in batches for job in batch]


def swept_keys(sweep_dir: Path) -> set[str]:
    """The keys (without `+`, `~`) the sweep saved in `sweep_dir` varies: never "the same in
    every job", whichever of its jobs ran."""
    config = saved_sweep(sweep_dir)
    return swept_in(config) if config is not None else set()


def swept_in(config: DictConfig) -> set[str]:
    """The keys a sweep's config sweeps: those a sweep override (in the sweeper's `params` or on
    the command line) names, less those a plain value fixes. The basic sweeper keeps the last
    override of a key (the command line's over `params`); Optuna's drops from its search space
    any key a plain value fixes, wherever it stands."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = {str(k).lstrip("+~") for k in raw(config, "hydra.sweeper.params") or {}}
    parser = OverridesParser.create()
    last_is_sweep: dict[str, bool] = {}  # key -> whether its last override sweeps
    fixed_anywhere: set[str] = set()
    for argument in sweep_arguments(config):
        try:
            override = parser.parse_override(argument)
            key, is_sweep = override.get_key_element(), override.is_sweep_override()
        except Exception:  # a value only a running Hydra parses: a `params` key is swept
            key = argument.split("=", 1)[0]
            is_sweep = key.lstrip("+~") in params
        last_is_sweep[key.lstrip("+~")] = is_sweep
        if not is_sweep:
            fixed_anywhere.add(key.lstrip("+~"))
    swept = {key for key, is_sweep in last_is_sweep.items() if is_sweep}
    return swept if is_basic_sweep(config) else swept - fixed_anywhere


def end_sweep_on_preemption(
    sweep_dir: Path, num: int, output_dir: Path, message: str, entry_module: str | None
) -> None:
    """Job `num` was preempted (it saved last.ckpt) and ends the whole sweep: record it in the
    ledger as preempted, with its resume command, note the jobs that will not run, and say so
    in one more `error:` line after the job's own."""
    resume = message.rsplit("; ", 1)[-1] if "resume with " in message else ""
    end_sweep_early(sweep_dir, num, output_dir, f"preempted: {message}", resume, entry_module)


def end_sweep_on_interrupt(hydra_cfg: DictConfig, resume: str, task: Callable[..., Any]) -> None:
    """A Ctrl-C stopped this job (`resume`: how to resume it, "" if it saved nothing). Under
    the basic launcher (one process runs the jobs in turn) it ended the sweep, as a preemption
    does; a submitit launcher's other jobs were submitted with it, and only this one is noted."""
    sweep_dir, num = Path(hydra_cfg.sweep.dir), hydra_cfg.job.num
    output_dir = Path(hydra_cfg.runtime.output_dir)
    if not str(hydra_cfg.launcher.get("_target_", "")).endswith("BasicLauncher"):
        record_job(sweep_dir, num, output_dir, False, INTERRUPTED, resume)
        return
    entry = entry_module_of(task)
    end_sweep_early(sweep_dir, num, output_dir, INTERRUPTED, resume, entry, cause="interrupted")


def end_sweep_early(
    sweep_dir: Path,
    num: int,
    output_dir: Path,
    why: str,
    resume: str,
    entry_module: str | None,
    cause: str = "preempted",
) -> None:
    """Job `num` ended the whole sweep (`cause`: preempted, or interrupted by a Ctrl-C), with
    `resume` its resume command ("" if it saved no checkpoint): record it in the ledger, note the
    jobs that will not run, and say so in one more `error:` line after the job's own."""
    record_job(sweep_dir, num, output_dir, False, why, resume)
    config = saved_sweep(sweep_dir)
    jobs = planned_jobs(config) if config is not None else None
    left = jobs[num + 1 :] if jobs is not None else []
    trials = raw(config, "hydra.sweeper.n_trials") if config is not None else None
    trials_left = max(int(trials) - num - 1, 0) if isinstance(trials, int) else 0
    record_cut_short(sweep_dir, left, trials_left)
    if jobs is not None and not left:
        return  # the last job: nothing else was going to run
    line = not_run_line(sweep_dir, num, left, trials_left, entry_module, config, cause, resume)
    print(f"error: {line}", file=sys.stderr, flush=True)


def not_run_line(
    sweep_dir: Path,
    num: int,
    left: list[list[str]],
    trials_left: int,
    entry_module: str | None,
    config: DictConfig | None,
    cause: str = "preempted",
    resume: str = "resume with",
    start: str = "",
) -> str:
    """What did not run after job `num` stopped the sweep under `sweep_dir`, and how to run it
    (with job `num` itself when it cannot be resumed: `resume` is ""). `start`: the sweep
    stopped between jobs, after job `num` ended (-1: before the first), so that this line
    begins with it and none of job `num` is to run again (`sweep_sigterm`)."""
    between = bool(start)
    start = start or f"the sweep under {sweep_dir} was cut short at job {num} ({cause})"
    if not left:
        if trials_left:
            storage = raw(config, "hydra.sweeper.storage") if config else None
            if not storage:  # the study lived in the sweep's process (rev_diff21)
                return (
                    f"{start}: {trials_left} more trial(s) of the Optuna search did not run, and "
                    "its study was in memory (hydra.sweeper.storage=null): start the search "
                    "again with a new hydra.sweep.dir (a storage such as sqlite:///optuna.db "
                    "keeps a study across runs)"
                )
            if between:  # Optuna had asked for the next trial(s), and not told the last one
                return (
                    f"{start}: {trials_left} more trial(s) of the Optuna search did not run, and "
                    f"the trials it had asked for stay RUNNING in the study ({storage}): mark "
                    "them failed (optuna.load_study(...).tell(<trial number>, state="
                    "TrialState.FAIL)), then run the search again with the same study_name and "
                    "storage and a new hydra.sweep.dir to go on"
                )
            return (
                f"{start}: {trials_left} more trial(s) of the Optuna search did not run, and "
                f"this job's trial stays RUNNING in the study{f' ({storage})' if storage else ''}: "
                "mark it failed (optuna.load_study(...).tell(<trial number>, state="
                "TrialState.FAIL)), then run the search again with the same study_name and "
                "storage and a new hydra.sweep.dir to go on"
            )
        return f"{start}: its later jobs (if any) did not run"
    swept = swept_in(config) if config is not None else set()
    named = [" ".join(o for o in job if o.split("=", 1)[0].lstrip("+~") in swept) for job in left]
    shown = "; ".join(f"job {num + 1 + n} ({o})" for n, o in enumerate(named[:3]))
    shown += "; ..." if len(left) > 3 else ""
    jobs = planned_jobs(config) if config is not None and not resume and not between else None
    rerun = jobs[num:] if jobs else left  # job `num` too: it saved nothing to resume from
    command = rerun_command(rerun, entry_module or "lmtrain.train", config, sweep_dir)
    then = f"after resuming job {num}, run them" if rerun is left else f"run job {num} and them"
    then = "run them" if between else then
    return f"{start}: {len(left)} job(s) did not run ({shown}): {then} with {command}"


def rerun_command(
    left: list[list[str]], entry_module: str, config: DictConfig | None, sweep_dir: Path
) -> str:
    """One `-m` command that runs exactly the jobs `left` (each key with the values it takes
    among them, when those jobs are every combination of them), else the first job's command."""
    values: dict[str, list[str]] = {}
    for job in left:
        for override in job:
            key, _, value = override.partition("=")
            values.setdefault(key, [])
            if value not in values[key]:
                values[key].append(value)
    combinations = 1
    for options in values.values():
        combinations *= len(options)
    plain = all(not any(c in v for c in ",[]{}()") for vs in values.values() for v in vs)
    hydra = [str(o) for o in raw(config, "hydra.overrides.hydra") or []] if config else []
    hydra = [o for o in hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    rest = f"hydra.sweep.dir={sweep_dir}_rest"
    if combinations == len(left) and plain:
        args = [f"{key}={','.join(options)}" for key, options in values.items()]
        return "python -m " + shlex.join([entry_module, "-m", *args, *hydra, rest])
    # One sweep folder per command: a second command into the first's was refused (rev_diff21).
    first = f"hydra.sweep.dir={sweep_dir}_rest_1"
    return "one command per job, each into its own sweep folder (_rest_1, _rest_2, ...), e.g. " + (
        "python -m " + shlex.join([entry_module, "-m", *left[0], *hydra, first])
    )


def rest_folders(sweep_dir: Path) -> list[Path]:
    """The sweep folders that the `_rest` commands of a cut-short sweep (`rerun_command`) name
    and that exist: where the jobs that did not run in `sweep_dir` went on."""
    rest = re.compile(re.escape(sweep_dir.name) + r"_rest(_\d+)?")
    try:
        found = [p for p in sweep_dir.parent.iterdir() if rest.fullmatch(p.name) and p.is_dir()]
    except OSError:  # the parent unreadable: nothing to name
        return []
    return sorted(found)
