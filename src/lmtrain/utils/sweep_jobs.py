"""A sweep's job folders read back for `lmtrain.report`: one `Job` per folder, with its curve.

Each job's overrides (`.hydra/overrides.yaml`), final metrics (`metrics.json`) and validation
curve (`sweep_curves`: from its W&B run, CSV logger or TensorBoard events). A file that
cannot be read makes its job unreadable, with a warning, rather than stopping the report. Kept
apart from `sweep_checks`, which guards a sweep while it starts and ends: this module only reads.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import ListConfig

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils import locks
from lmtrain.utils.sweep_curves import job_loggers, read_curve
from lmtrain.utils.sweep_ledger import (
    BEFORE,
    INTERRUPTED,
    LEDGER,
    SWEEP_FILE,
    cut_short,
    earlier_job,
    failed_in,
    finished_in,
    ledger_name,
    metrics_fingerprint,
    no_job_left,
    not_a_job,
    read_ledger,
    read_sweep_file,
    renamed_jobs,
    sweep_jobs,
)
from lmtrain.utils.sweep_plan import MULTIRUN_FILE
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
# Why a job that finished has no metrics.json, in its ledger record: model.nan_guard=stop ended
# it (`run_for_sweeper`). A result of the search, ranked as diverged, not as failed.
STOPPED_DIVERGED = "diverged: model.nan_guard=stop ended it"
# A folder that held a job when the sweep last started there: an earlier sweep's, unless a job of
# this one has run there since (then a metrics.json left as it was is still the earlier one's).
REPLACED = "the earlier sweep that the one last started there replaces (overwrite_run=true)"


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
    loggers: frozenset[str] | None = None  # the kinds its run logged to (None: not saved)
    direction: str = ""  # hydra.sweeper.direction as the job saved it ("" if none)
    problem: str = ""
    running: bool = False  # a live process holds its folder's lock
    diverged: bool = False  # the sweep's ledger says the nan guard stopped it (no metrics)
    resume: str = ""  # the ledger says it was preempted, and how to resume it (no metrics)
    interrupted: bool = False  # the ledger says a Ctrl-C stopped it (and the sweep)
    not_run: bool = False  # the sweep stopped before it (`sweep_ledger.record_cut_short`)

    @property
    def value(self) -> float:
        return self.metrics.get(self.optimized_metric, math.nan)

    @property
    def status(self) -> str:
        if self.not_run:
            return "not run"
        if self.running:
            return "running"
        if self.problem:
            return "unreadable"
        if not self.metrics:
            if self.diverged or self.interrupted:
                return "diverged" if self.diverged else "interrupted"
            return "preempted" if self.resume else "failed"
        return "ok" if math.isfinite(self.value) else "diverged"


def job_folders(sweep_dir: Path) -> list[Path]:
    """Folders with `.hydra/overrides.yaml` (at any depth), and numbered ones in the sweep
    folder (damaged jobs). A sweep's folder holds multirun.yaml (Hydra's; `SweepOutcome` saves
    it for Optuna) or `.jobs/sweep.json` (the ledger): any other folder is refused."""
    if not sweep_dir.is_dir():
        what = "is a file" if sweep_dir.exists() else "does not exist"
        raise LMTrainError(
            f"{str(sweep_dir)!r} {what}: pass a sweep folder, e.g. logs/train/multiruns/<time>"
        )
    # A folder of sweeps (logs/train/multiruns/): their jobs would merge into one table.
    roots = {p.parent for p in sweep_dir.glob("*/**/multirun.yaml")}
    roots |= {p.parent.parent for p in sweep_dir.glob("*/**/.jobs/sweep.json")}
    if roots:
        shown = ", ".join(str(p.relative_to(sweep_dir)) for p in sorted(roots)[:3])
        raise LMTrainError(
            f"{str(sweep_dir)!r} holds sweeps ({shown}{', ...' if len(roots) > 3 else ''}), not "
            "the jobs of one: pass one sweep's folder"
        )
    # `.` or logs/train/runs/: every run below a "job", the user's report.md replaced (docs29).
    if not any((sweep_dir / name).is_file() for name in (MULTIRUN_FILE, f"{LEDGER}/{SWEEP_FILE}")):
        raise LMTrainError(
            f"{str(sweep_dir)!r} is not a sweep folder (no {MULTIRUN_FILE} or {LEDGER}/ there): "
            "pass one sweep's folder, e.g. logs/train/multiruns/<time>"
        )
    # Any depth: a hydra.sweep.subdir such as lr_${model.optimizer.lr}/seed_${seed} nests them.
    folders = {path.parent.parent for path in sweep_dir.glob("**/.hydra/overrides.yaml")}
    folders.discard(sweep_dir)  # not a job
    if not folders:
        raise LMTrainError(
            f"{str(sweep_dir)!r} holds no multirun jobs (no */.hydra/overrides.yaml): pass a "
            "sweep folder, e.g. logs/train/multiruns/<time>"
        )
    return sorted(folders | {f for f in sweep_dir.iterdir() if is_number(f.name) and f.is_dir()})


def is_number(name: str) -> bool:
    """A job folder's name: ASCII digits (`str.isdigit` takes "²", which `int` refuses)."""
    return name.isascii() and name.isdigit()


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep, by job number. A folder where the sweep's ledger says its
    jobs failed and none finished is failed, whatever metrics.json was there when it failed
    (an `overwrite_run=true` sweep over an earlier one); one written since (a resume of the
    job) is its result. Folders the ended sweep does not name are an earlier sweep's: left out,
    but one that is a missing job folder it names, renamed (`renamed_jobs`); so is one an
    earlier sweep left that no job of this one has started in (a sweep killed, or still on),
    and its metrics.json, unchanged, is no result of a job of this sweep that left no record.
    No job left: an LMTrainError."""
    records, members = read_ledger(sweep_dir), sweep_jobs(sweep_dir)
    recorded, before = {record.folder for record in records}, read_sweep_file(sweep_dir).get(BEFORE)
    before = before if isinstance(before, dict) else {}
    folders = job_folders(sweep_dir)
    known = members if members is not None else recorded
    names = {folder: ledger_name(folder, sweep_dir, known) for folder in folders}
    missing = sorted(
        name for name in (members or set()) - set(names.values()) if not (sweep_dir / name).exists()
    )
    strays = [folder for folder, name in names.items() if name is None]
    fits = renamed_jobs(strays, missing, records) if members is not None else {}
    jobs = []
    for n, folder in enumerate(folders):
        name, num, fit = names[folder], None, fits.get(folder)
        if fit is not None and fit[2] == 1:
            name, num = fit[0], fit[1]
            warn(
                f"job folder {folder}: job {num} of the sweep, in the folder {name!r} that its "
                f"ledger names, renamed (its .hydra/hydra.yaml says so): reported as job {num}"
            )
        elif name is None and members is not None:
            warn(not_a_job(folder, missing, fit))
            continue
        earlier = None if name in recorded else earlier_job(sweep_dir, folder, before)
        if earlier is not None and not earlier[1]:
            warn(f"job folder {folder}: {REPLACED}, which has not run a job there: left out")
            continue
        job = read_job(folder, n)
        if earlier is not None and job.metrics and earlier[0] == metrics_fingerprint(folder):
            job.metrics = {}  # a job of this sweep started there, and wrote none (killed?)
            warn(f"job folder {folder}: its metrics.json is from {REPLACED}: shown as {job.status}")
        job.num = job.num if num is None else num
        failures = failed_in(records, name or "")
        last = failures[-1] if failures and not finished_in(records, name or "") else None
        ended = [r for r in records if r.folder == (name or "") and r.ok]
        job.diverged = bool(ended) and ended[-1].why == STOPPED_DIVERGED
        job.resume = last.resume if last else ""
        job.interrupted = last is not None and last.why.startswith(INTERRUPTED)
        if last and job.metrics and last.metrics in (None, metrics_fingerprint(folder)):
            warn(
                f"job folder {job.folder}: job {last.num} of this sweep failed there "
                f"({last.why}); its metrics.json is from before that: shown as failed"
            )
            job.metrics = {}
        jobs.append(job)
    if not jobs:
        raise LMTrainError(no_job_left(sweep_dir, None if members is None else sorted(members)))
    return sorted(jobs + jobs_not_run(sweep_dir, jobs), key=lambda job: job.num)


def jobs_not_run(sweep_dir: Path, jobs: list[Job]) -> list[Job]:
    """The jobs that a sweep cut short (a preempted job ends it) never ran, numbered after the
    last that did, as rows without a folder or metrics."""
    left, _ = cut_short(sweep_dir)
    after = max(job.num for job in jobs) + 1
    return [
        Job(
            after + n,
            sweep_dir,
            {k: v for k, v in parse_overrides(o).items() if k != "resume"},
            {},
            jobs[0].optimized_metric,
            not_run=True,
        )
        for n, o in enumerate(left)
    ]


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

    # A job resumed with `resume=<job folder>` has that command's overrides here, and the ones it
    # replaced under .hydra/previous/<time>/: back to the sweep's own (the first without
    # `resume=`; older ones are an earlier sweep's), each later one on top, `resume` left out.
    chain = [load(".hydra/overrides.yaml", yaml.safe_load, list)]
    earlier = sorted(folder.glob(".hydra/previous/*/overrides.yaml"), reverse=True)
    for path in earlier if resumes(chain[0]) else []:
        chain.append(load(str(path.relative_to(folder)), yaml.safe_load, list))
        if not resumes(chain[-1]):
            break
    overrides = [line for lines in reversed(chain) for line in lines]
    config = load(".hydra/config.yaml", yaml.safe_load, dict)
    # Whole numbers as floats: float() of a 400-digit one overflows, where parsing gives inf.
    metrics = load("metrics.json", lambda text: json.loads(text, parse_int=float), dict, False)
    saved_hydra = load(".hydra/hydra.yaml", yaml.safe_load, dict, needed=False)
    # `true` ranked as 1 and "6.5" read as no value (diverged): lmtrain writes only numbers.
    optimized_metric = str(config.get("optimized_metric") or "val/loss")
    shown = [k for k in (optimized_metric, *METRIC_COLUMNS) if k in metrics]
    odd = [f"{k}={metrics[k]!r}" for k in dict.fromkeys(shown) if not is_real(metrics[k])]
    if odd:
        problems.append(f"metrics.json holds {', '.join(odd[:3])}, not a number")
    job = Job(
        num=int(folder.name) if is_number(folder.name) else num,
        folder=folder,
        overrides={k: v for k, v in parse_overrides(overrides).items() if k != "resume"},
        metrics={k: float(v) for k, v in metrics.items() if is_real(v)},
        optimized_metric=optimized_metric,
        wandb_id=load(RUN_ID_FILE, str.strip, str, needed=False),
        direction=sweep_direction(dig(saved_hydra, "hydra", "sweeper", "direction")),
        problem="; ".join(problems),
        running=locks.held_elsewhere(folder / locks.RUN_FOLDER_LOCK),
        loggers=job_loggers(config),
    )
    if job.running:
        warn(f"job folder {folder}: a live process holds it: shown as running (the sweep is on)")
    elif job.problem:
        warn(f"job folder {folder}: {job.problem}: shown as unreadable")
    try:
        job.curve = read_curve(folder, job.loggers, job.wandb_id)
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as err:
        warn(f"the val/loss curve of job folder {folder} cannot be read ({first_line(err)})")
    return job


def resumes(overrides: list[Any]) -> bool:
    """Whether a command's overrides resume a run (`resume=<folder>`)."""
    return any(str(line).split("=", 1)[0].lstrip("+~") == "resume" for line in overrides)


def is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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


def sweep_direction(value: Any) -> str:
    """`hydra.sweeper.direction` as one lower-case word ("" if unset). Hydra's Optuna sweeper
    takes a list too, and one study's objective is then `[maximize]`: read as a string, it was
    never "maximize", so failed trials scored +inf and became the best (red team rev_sweep)."""
    if isinstance(value, (list, tuple, ListConfig)) and len(value) == 1:
        value = value[0]
    return str(value or "").lower()
