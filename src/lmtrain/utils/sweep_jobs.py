"""The job folders of a multirun: what a sweep may start, what it wrote, and the report's reading.

Before a sweep starts, `refuse_sweep_that_cannot_start` checks what Hydra's sweepers and
launchers would only trace back on (an empty Optuna range, SLURM without `srun`). While it runs,
`file_stamp`s tell its files from an earlier sweep's in the same folder. For `lmtrain.report`,
each job's overrides (`.hydra/overrides.yaml`), final metrics (`metrics.json`) and validation
curve (its offline W&B run, read with `wandb leet inspect`, or `csv/metrics.csv`). A file that
cannot be read makes its job unreadable, with a warning, rather than stopping the report.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.wandb_run import RUN_ID_FILE

# Final metrics shown after the optimized one, when a job has them.
METRIC_COLUMNS = (
    "val/loss",
    "val/bpb",
    "val/ppl",
    "train/loss",
    "trainer/global_step",
    "time/train_s",
)
# Columns left out when no job has them (runs from before lmtrain logged val/bpb).
OPTIONAL_COLUMNS = ("val/bpb",)
CURVE_METRIC = "val/loss"
# The Optuna sweeper's best trial, written into the sweep folder after the last trial.
OPTUNA_RESULTS = "optimization_results.yaml"


@dataclass
class Job:
    """One multirun job folder, read back; `problem`: its files that could not be read."""

    num: int
    folder: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    optimized_metric: str
    wandb_id: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)
    direction: str = ""  # hydra.sweeper.direction as the job saved it ("" if none)
    problem: str = ""

    @property
    def value(self) -> float:
        return self.metrics.get(self.optimized_metric, math.nan)

    @property
    def status(self) -> str:
        if self.problem:
            return "unreadable"
        if not self.metrics:
            return "failed"
        return "ok" if math.isfinite(self.value) else "diverged"


def job_folders(sweep_dir: Path) -> list[Path]:
    """Folders with `.hydra/overrides.yaml`, and numbered ones beside them (damaged jobs)."""
    folders = {path.parent.parent for path in sweep_dir.glob("*/.hydra/overrides.yaml")}
    if not folders:
        raise LMTrainError(
            f"{str(sweep_dir)!r} holds no multirun jobs (no */.hydra/overrides.yaml): pass a "
            "sweep folder, e.g. logs/train/multiruns/<time>"
        )
    return sorted(folders | {f for f in sweep_dir.iterdir() if f.name.isdigit() and f.is_dir()})


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep, by job number."""
    jobs = [read_job(folder, n) for n, folder in enumerate(job_folders(sweep_dir))]
    return sorted(jobs, key=lambda job: job.num)


def read_job(folder: Path, num: int) -> Job:
    """One job folder. A file that cannot be read or parsed makes the job unreadable, with a
    warning, instead of stopping the report of every job; a damaged curve is only warned of."""
    problems: list[str] = []

    def load(name: str, parse: Callable[[str], Any], kind: type, needed: bool = True) -> Any:
        path = folder / name
        try:
            if needed or path.exists():
                value = parse(path.read_text())
                if isinstance(value, kind):
                    return value
                got = "empty" if value is None else type(value).__name__
                raise ValueError(f"{got}, not a {kind.__name__}")
        except OSError as err:  # missing, not ours, a folder
            problems.append(f"{name} cannot be read ({err.strerror or err})")
        except (ValueError, yaml.YAMLError) as err:  # ValueError: JSON, UnicodeDecodeError
            problems.append(f"{name} is damaged ({first_line(err)})")
        return kind()

    overrides = load(".hydra/overrides.yaml", yaml.safe_load, list)
    config = load(".hydra/config.yaml", yaml.safe_load, dict)
    metrics = load("metrics.json", json.loads, dict, needed=False)
    saved_hydra = load(".hydra/hydra.yaml", yaml.safe_load, dict, needed=False)
    job = Job(
        num=int(folder.name) if folder.name.isdigit() else num,
        folder=folder,
        overrides=parse_overrides(overrides),
        metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
        optimized_metric=str(config.get("optimized_metric") or "val/loss"),
        wandb_id=load(RUN_ID_FILE, str.strip, str, needed=False),
        direction=str(dig(saved_hydra, "hydra", "sweeper", "direction") or "").lower(),
        problem="; ".join(problems),
    )
    if job.problem:
        warn(f"job folder {folder}: {job.problem}: shown as unreadable")
    try:
        job.curve = read_curve(folder)
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as err:
        warn(f"the val/loss curve of job folder {folder} cannot be read ({first_line(err)})")
    return job


def dig(mapping: Any, *keys: str) -> Any:
    """`mapping[k1][k2]...`, or None where a level is missing or not a mapping."""
    for key in keys:
        mapping = mapping.get(key) if isinstance(mapping, dict) else None
    return mapping


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """`["model.optimizer.lr=0.001", "+x=1"]` -> {"model.optimizer.lr": "0.001", "x": "1"}."""
    pairs = (str(line).split("=", 1) for line in lines)
    return {key.lstrip("+~"): value for key, value in (p for p in pairs if len(p) == 2)}


def read_curve(folder: Path) -> list[tuple[float, float]]:
    """(step, val/loss) of every validation, from the W&B run or else the CSV logger. Steps are
    `trainer/global_step` as Lightning logs them, the W&B dashboard's x axis (0-based during
    training: the validation after step 200 sits at 199). The last point is the final validation
    on the whole val split, metrics.json's val/loss; of two at one step, the later is kept."""
    points: dict[float, float] = {}
    wandb_runs = sorted((folder / "wandb").glob("*run-*"))
    csv_file = folder / "csv" / "metrics.csv"
    if wandb_runs:
        for run in wandb_runs:  # a resumed run has one log per session, in time order
            for item in wandb_history(run):
                if CURVE_METRIC in item and "trainer/global_step" in item:
                    points[float(item["trainer/global_step"])] = float(item[CURVE_METRIC])
    elif csv_file.is_file():
        with csv_file.open() as f:
            for row in csv.DictReader(f):
                if row.get(CURVE_METRIC) and row.get("step"):
                    points[float(row["step"])] = float(row[CURVE_METRIC])
    return sorted(points.items())


def wandb_history(run_dir: Path) -> list[dict[str, Any]]:
    """The history rows of an offline W&B run, read from its .wandb log by `wandb leet inspect`."""
    beside_python = Path(sys.executable).with_name("wandb")
    wandb_cli = str(beside_python) if beside_python.exists() else shutil.which("wandb")
    if wandb_cli is None:
        warn(f"no wandb command to read {run_dir}: no curve for it")
        return []
    command = [wandb_cli, "leet", "inspect", "--json", str(run_dir)]
    out = subprocess.run(command, capture_output=True, text=True)
    records = (json.loads(line) for line in out.stdout.splitlines() if '"history"' in line)
    return [record["history"]["item"] for record in records if record.get("type") == "history"]


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
