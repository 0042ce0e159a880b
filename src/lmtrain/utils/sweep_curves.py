"""A sweep job's val/loss curve, read back from its folder for `lmtrain.report`, and the plot.

Read from the first logger of the job's run that has it there: its W&B run (the offline `.wandb`
log of the id in `wandb_run_id`, read with `wandb leet inspect`), `csv/metrics.csv`, or the
TensorBoard events under `tensorboard/` (TensorBoard's own reader), or in the CSV and TensorBoard
folders the job's saved config gives its loggers (`lmtrain.utils.logger_folders`). Only the run's
own: a job folder that `overwrite_run=true` reused keeps the replaced run's files. The report
plotted the earlier W&B run's steps after the new run's (every `wandb/*run-*` was read), and a
logger the new run no longer used would still have given its curve; so only the W&B run of the
folder's id is read, and only the loggers that the job's saved config (`.hydra/config.yaml`)
names.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lmtrain.utils.logger_folders import logger_folders, logger_kind
from lmtrain.utils.tracker_ids import saved_text
from lmtrain.utils.wandb_run import RUN_ID_FILE

if TYPE_CHECKING:
    from lmtrain.utils.sweep_jobs import Job

CURVE_METRIC = "val/loss"
# An offline or online W&B session folder: `offline-run-<date>_<time>-<run id>`.
WANDB_SESSION = re.compile(r"(?:offline-)?run-(?P<time>\d{8}_\d{6})-(?P<id>.+)")
# Where the curve is read from, as the warning names them.
CURVE_SOURCES = (
    "a W&B run in wandb/, csv/metrics.csv or TensorBoard events in tensorboard/ (or the CSV and "
    "TensorBoard folders the job's config names)"
)


def job_loggers(config: dict[str, Any]) -> frozenset[str] | None:
    """The kinds of logger (`wandb`, `csv`, `tensorboard`, `mlflow`, ...) that a job's saved
    config names, from each entry's `_target_` class; None when it says nothing of loggers."""
    if "logger" not in config:
        return None
    entries = config["logger"] if isinstance(config["logger"], dict) else {}
    return frozenset(kind for kind in map(logger_kind, entries.values()) if kind)


def read_curve(
    folder: Path, loggers: frozenset[str] | None = None, wandb_id: str | None = None
) -> list[tuple[float, float]]:
    """(step, val/loss) of every validation, from the job's W&B run, CSV logger or TensorBoard
    events, the first that has points; `loggers` (None: any) the kinds its run logged to, and
    `wandb_id` (None: read from the folder) its W&B run. Steps are `trainer/global_step` as
    Lightning logs them, the W&B dashboard's x axis (0-based during training: the validation
    after step 200 sits at 199). The last point is the final validation on the whole val split,
    metrics.json's val/loss; of two at one step, the later is kept."""
    id_file = folder / RUN_ID_FILE
    if wandb_id is None:
        wandb_id = saved_text(id_file) or ""  # not UTF-8, unreadable: no id
    run_id = wandb_id
    # Where the saved config put them (logger.csv.version=v: csv/v/), else the default folders.
    folders = logger_folders(folder)
    csv_files = [f / "metrics.csv" for f in folders.get("csv") or [folder / "csv"]]
    events = folders.get("tensorboard") or [folder / "tensorboard"]
    readers = {
        "wandb": lambda: wandb_curve(folder / "wandb", run_id),
        "csv": lambda: first_curve(map(csv_curve, csv_files)),
        "tensorboard": lambda: first_curve(map(tensorboard_curve, events)),
    }
    for kind, read in readers.items():
        points = read() if loggers is None or kind in loggers else {}
        if points:
            return sorted(points.items())
    return []


def first_curve(curves: Iterable[dict[float, float]]) -> dict[float, float]:
    """The first of `curves` (one per logger of a kind, read as needed) that has points."""
    return next((points for points in curves if points), {})


def wandb_curve(wandb_dir: Path, run_id: str) -> dict[float, float]:
    """The W&B run `run_id`'s sessions (every one if "": a folder from before the id was kept),
    one per start of a resumed run, in time order."""
    sessions = [
        (match["time"], path)
        for path in wandb_dir.glob("*run-*")
        if (match := WANDB_SESSION.fullmatch(path.name)) and run_id in ("", match["id"])
    ]
    points: dict[float, float] = {}
    for _, session in sorted(sessions):
        for item in wandb_history(session):
            if CURVE_METRIC in item and "trainer/global_step" in item:
                points[float(item["trainer/global_step"])] = float(item[CURVE_METRIC])
    return points


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


def csv_curve(csv_file: Path) -> dict[float, float]:
    points: dict[float, float] = {}
    if csv_file.is_file():
        with csv_file.open() as f:
            for row in csv.DictReader(f):
                if row.get(CURVE_METRIC) and row.get("step"):
                    points[float(row["step"])] = float(row[CURVE_METRIC])
    return points


def tensorboard_curve(root: Path) -> dict[float, float]:
    """val/loss from every event folder under `root` (a job's is `tensorboard/<job name>/`), as
    TensorBoard shows it: a restart marker (a resumed run's `purge_step`) hides the later steps,
    and so does a step logged below one logged before (a run that started over in the folder:
    TensorBoard's out-of-order purge)."""
    folders = sorted({p.parent for p in root.rglob("events.out.tfevents.*") if p.is_file()})
    if not folders:
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        warn(f"tensorboard is not installed to read {root}: no curve for it")
        return {}
    quiet = logging.getLogger("tensorboard")  # its purge notices: warnings on stderr
    level, timed = quiet.level, []
    quiet.setLevel(logging.ERROR)
    try:
        for folder in folders:
            events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
            events.Reload()
            for tag in events.Tags()["scalars"]:
                timed += [(e.wall_time, e.step, tag, e.value) for e in events.Scalars(tag)]
    finally:
        quiet.setLevel(level)
    points: dict[float, float] = {}
    latest = -1
    for _, step, tag, value in sorted(timed, key=lambda event: event[0]):
        if step < latest:  # a run that started over: what it had logged from `step` on is gone
            points = {s: v for s, v in points.items() if s < step}
        latest = step
        if tag == CURVE_METRIC:
            points[float(step)] = float(value)
    return points


def without_curve(jobs: Iterable[Job]) -> str | None:
    """A warning's start naming the finished jobs that logged but whose folders hold no val/loss
    curve (logger=mlflow: its store is elsewhere), or None. Jobs whose config does not say what
    they logged to, and failed ones, are not named: they may never have validated."""
    done = ("ok", "diverged")
    named = [j for j in jobs if not j.curve and j.loggers is not None and j.status in done]
    named.sort(key=lambda job: job.num)
    if not named:
        return None
    used = sorted({kind for job in named for kind in job.loggers or ()})
    nums = ", ".join(str(job.num) for job in named)
    one = len(named) == 1
    return (
        f"job{'' if one else 's'} {nums} {'has' if one else 'have'} no val/loss curve in "
        f"{'its folder' if one else 'their folders'} (the report reads it from {CURVE_SOURCES}; "
        f"{'it' if one else 'they'} logged to {', '.join(used) or 'no logger'})"
    )


def plot_curves(jobs: list[Job], out: IO[bytes], varying: list[str]) -> None:
    """val/loss against step, one line per job, labelled by job number and varying overrides."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for job in (job for job in jobs if job.curve):
        steps, losses = zip(*job.curve, strict=True)
        swept = (f"{k.rsplit('.', 1)[-1]}={job.overrides.get(k, '')}" for k in varying)
        label = f"#{job.num} {','.join(swept)}".strip()
        ax.plot(steps, losses, marker="o", markersize=3, label=label)
    ax.set(xlabel="trainer/global_step (as logged to W&B)", ylabel=CURVE_METRIC)
    ax.set_title(f"{CURVE_METRIC} of every job (last point: whole val split)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
