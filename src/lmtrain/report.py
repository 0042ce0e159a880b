"""Review a sweep without a dashboard: `python -m lmtrain.report <sweep folder>`.

Reads every job folder of a multirun (`logs/<task>/multiruns/<time>/<n>/`): the overrides Hydra
saved in `.hydra/overrides.yaml`, the final metrics in `metrics.json` and the validation curve
from the job's W&B run (its offline `.wandb` log, read with `wandb leet inspect`; a CSV logger's
`csv/metrics.csv` also works). Writes into the sweep folder:

    report.csv       one row per job, best first: status, the overrides that differ, metrics
    report.md        the same table by optimized_metric, and the overrides every job shares
    val_curves.png   val/loss against step, one line per job

A job without metrics.json failed; one whose metric is NaN or infinite diverged. Both sort last.
W&B stays the dashboard; this is the view that fits in a terminal, a pull request or an email.
"""

from __future__ import annotations

# Before the libraries below: they import with the garbage collector paused.
from lmtrain.utils import gc_pause

# isort: split

import argparse
import csv
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lmtrain.errors import LMTrainError
from lmtrain.utils.wandb_run import RUN_ID_FILE

gc_pause.resume()

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


@dataclass
class Job:
    """One multirun job folder, read back."""

    num: int
    folder: Path
    overrides: dict[str, str]
    metrics: dict[str, float]
    optimized_metric: str
    wandb_id: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)

    @property
    def value(self) -> float:
        return self.metrics.get(self.optimized_metric, math.nan)

    @property
    def status(self) -> str:
        if not self.metrics:
            return "failed"
        return "ok" if math.isfinite(self.value) else "diverged"


def read_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of the sweep (those with `.hydra/overrides.yaml`), by job number."""
    jobs = []
    for overrides_file in sweep_dir.glob("*/.hydra/overrides.yaml"):
        folder = overrides_file.parent.parent
        config = yaml.safe_load((folder / ".hydra" / "config.yaml").read_text()) or {}
        metrics_file = folder / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        id_file = folder / RUN_ID_FILE
        jobs.append(
            Job(
                num=int(folder.name) if folder.name.isdigit() else len(jobs),
                folder=folder,
                overrides=parse_overrides(yaml.safe_load(overrides_file.read_text()) or []),
                metrics={k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
                optimized_metric=config.get("optimized_metric") or "val/loss",
                wandb_id=id_file.read_text().strip() if id_file.is_file() else "",
                curve=read_curve(folder),
            )
        )
    return sorted(jobs, key=lambda job: job.num)


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """`["model.optimizer.lr=0.001", "+x=1"]` -> {"model.optimizer.lr": "0.001", "x": "1"}."""
    pairs = (str(line).split("=", 1) for line in lines)
    return {key.lstrip("+~"): value for key, value in (p for p in pairs if len(p) == 2)}


def read_curve(folder: Path) -> list[tuple[float, float]]:
    """(step, val/loss) of every validation, from the W&B run or else the CSV logger.

    Steps are `trainer/global_step` as Lightning logs them, the x axis of the W&B dashboard
    (0-based during training, so the validation after step 200 sits at 199). The last point is
    the final validation on the whole val split, the val/loss of metrics.json; should two share
    a step, the later one is kept.
    """
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
        print(f"warning: no wandb command to read {run_dir}: no curve for it", file=sys.stderr)
        return []
    command = [wandb_cli, "leet", "inspect", "--json", str(run_dir)]
    out = subprocess.run(command, capture_output=True, text=True)
    rows = []
    for line in out.stdout.splitlines():
        if '"history"' in line:
            record = json.loads(line)
            if record.get("type") == "history":
                rows.append(record["history"]["item"])
    return rows


def ranked(jobs: list[Job], maximize: bool = False) -> list[Job]:
    """Finished jobs by their metric (best first), then diverged, then failed ones."""
    order = {"ok": 0, "diverged": 1, "failed": 2}

    def key(job: Job) -> tuple[int, float, int]:
        value = job.value if job.status == "ok" else 0.0
        return (order[job.status], -value if maximize else value, job.num)

    return sorted(jobs, key=key)


@dataclass
class Table:
    header: list[str]
    rows: list[list[str | float | None]]  # metrics as floats (None: missing)
    varying: list[str]  # override keys that differ between jobs: the columns
    fixed: dict[str, str]  # overrides every job shares: one line under the table


def table(jobs: list[Job]) -> Table:
    """The jobs' rows, with a column for each override that differs between them."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    fixed = {
        k: jobs[0].overrides[k]
        for k in keys
        if all(k in job.overrides and job.overrides[k] == jobs[0].overrides[k] for job in jobs)
    }
    varying = [k for k in keys if k not in fixed]
    metric = jobs[0].optimized_metric if jobs else "val/loss"
    shown = [m for m in METRIC_COLUMNS if m != metric]
    metric_cols = [
        metric,
        *(m for m in shown if m not in OPTIONAL_COLUMNS or any(m in j.metrics for j in jobs)),
    ]
    header = ["rank", "job", "status", *varying, *metric_cols, "wandb_id"]
    rows = []
    for rank, job in enumerate(jobs, start=1):
        values = [job.metrics.get(m) for m in metric_cols]
        overrides = [job.overrides.get(k, "") for k in varying]
        rows.append([str(rank), str(job.num), job.status, *overrides, *values, job.wandb_id])
    return Table(header, rows, varying, fixed)


def fmt(value: str | float | None, digits: int | None = 4) -> str:
    """A table cell: metrics to `digits` significant digits (None: every digit), none as empty."""
    if value is None or isinstance(value, str):
        return value or ""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value)) if digits is None else f"{value:.{digits}g}"


def write_report(sweep_dir: str | Path, maximize: bool | None = None) -> dict[str, Path]:
    """Write report.csv, report.md and val_curves.png into the sweep folder; return their paths.

    `maximize` None follows the sweeper (`hydra.sweeper.direction` of an Optuna study)."""
    sweep_dir = Path(sweep_dir).expanduser()
    jobs = read_jobs(sweep_dir) if sweep_dir.is_dir() else []
    if not jobs:
        raise LMTrainError(
            f"{str(sweep_dir)!r} holds no multirun jobs (no */.hydra/overrides.yaml): pass a "
            "sweep folder, e.g. logs/train/multiruns/<time>"
        )
    if maximize is None:
        maximize = sweeper_direction(jobs[0].folder) == "maximize"
    jobs = ranked(jobs, maximize)
    tab = table(jobs)
    paths = {
        "csv": sweep_dir / "report.csv",
        "md": sweep_dir / "report.md",
        "png": sweep_dir / "val_curves.png",
    }
    with paths["csv"].open("w", newline="") as f:
        csv.writer(f).writerows([tab.header, *([fmt(v, None) for v in r] for r in tab.rows)])
    lines = [
        f"# Sweep {sweep_dir.resolve().name}: {len(jobs)} jobs by {jobs[0].optimized_metric}",
        "",
        "| " + " | ".join(tab.header) + " |",
        "|" + "---|" * len(tab.header),
        *("| " + " | ".join(fmt(v) for v in row) + " |" for row in tab.rows),
        "",
        "Same in every job: "
        + (", ".join(f"`{k}={v}`" for k, v in tab.fixed.items()) or "nothing"),
        "",
        f"![val/loss]({paths['png'].name})",
    ]
    paths["md"].write_text("\n".join(lines) + "\n")
    plot_curves(jobs, paths["png"], tab.varying)
    return paths


def sweeper_direction(job_folder: Path) -> str:
    """`hydra.sweeper.direction` as the job saved it in .hydra/hydra.yaml ("minimize" if none)."""
    saved = job_folder / ".hydra" / "hydra.yaml"
    hydra_cfg = (
        (yaml.safe_load(saved.read_text()) or {}).get("hydra", {}) if saved.is_file() else {}
    )
    return str((hydra_cfg.get("sweeper") or {}).get("direction") or "minimize").lower()


def plot_curves(jobs: list[Job], path: Path, varying: list[str]) -> None:
    """val/loss against step, one line per job, labelled by job number and varying overrides."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a cluster or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for job in jobs:
        if not job.curve:
            continue
        steps, losses = zip(*job.curve, strict=True)
        swept = (f"{k.rsplit('.', 1)[-1]}={job.overrides.get(k, '')}" for k in varying)
        label = f"#{job.num} {','.join(swept)}".strip()
        ax.plot(steps, losses, marker="o", markersize=3, label=label)
    ax.set_xlabel("trainer/global_step (as logged to W&B)")
    ax.set_ylabel(CURVE_METRIC)
    ax.set_title(f"{CURVE_METRIC} of every job (last point: whole val split)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmtrain.report",
        description="Table (CSV, Markdown) and val/loss curves (PNG) of a multirun's jobs.",
    )
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. logs/train/multiruns/<time>")
    parser.add_argument(
        "--maximize",
        action="store_true",
        default=None,
        help="higher optimized_metric is better (default: the sweeper's direction, else lower)",
    )
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, maximize=args.maximize)
    except LMTrainError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(paths["md"].read_text())
    print("\n".join(f"wrote {p}" for p in paths.values()))


if __name__ == "__main__":
    with gc_pause.without_final_gc():
        main()
