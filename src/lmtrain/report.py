"""Review a sweep without a dashboard: `python -m lmtrain.report <sweep folder>`.

Reads every job folder of a multirun (`logs/<task>/multiruns/<time>/<n>/`): the overrides Hydra
saved in `.hydra/overrides.yaml`, the final metrics in `metrics.json` and the validation curve
from the job's W&B run (its offline `.wandb` log, read with `wandb leet inspect`; a CSV logger's
`csv/metrics.csv` also works). Writes into the sweep folder (or `--out <folder>`):

    report.csv       one row per job, best first: status, the overrides that differ, metrics
    report.md        the same table by optimized_metric, and the overrides every job shares
    val_curves.png   val/loss against step, one line per job

A job without metrics.json failed (or was preempted or interrupted by a Ctrl-C, as the sweep's
ledger says, with how to resume it; jobs that this kept from running are rows of their own,
`not run`); one whose
metric is NaN or infinite diverged; one with a file
that cannot be read (a truncated metrics.json, no .hydra/config.yaml) is unreadable, with a warning:
the other jobs are still reported. These sort last, in that order, after the jobs still running
(a live process holds the folder's lock: a report of a sweep that is not over).
W&B stays the dashboard; this is the view that fits in a terminal, a pull request or an email.

In the sweep folder the three names are the report's own; a folder without Hydra's multirun.yaml or
lmtrain's ledger (`.jobs/`) is no sweep's (a project root, logs/train/runs/) and is refused before
anything is written. An `--out` folder may be anyone's
(a red team's `--out ~/docs` replaced a user's report.md): there a file of those names is replaced
only when it is a report this command wrote and nobody changed since (its sha256 is kept in
`.lmtrain_report.json` beside it), or with `--overwrite`.
"""

from __future__ import annotations

from lmtrain.utils import gc_pause, import_env

# Before the libraries' imports read RANK and LOCAL_RANK as numbers (lmtrain.utils.import_env).
import_env.exit_on_unreadable_rank()

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import argparse
    import csv
    import errno
    import hashlib
    import json
    import os
    import re
    import sys
    from collections.abc import Set
    from dataclasses import dataclass
    from pathlib import Path

    from lmtrain.errors import LMTrainError, first_line
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line
    from lmtrain.utils.io import atomic_write
    from lmtrain.utils.sweep_curves import plot_curves, without_curve
    from lmtrain.utils.sweep_jobs import (
        METRIC_COLUMNS,
        OPTIONAL_COLUMNS,
        Job,
        job_folders,
        read_jobs,
        warn,
    )
    from lmtrain.utils.sweep_ledger import cut_short, unended
    from lmtrain.utils.sweep_plan import rest_folders, swept_keys


# Markdown's own characters, escaped in the table's cells: an override's value `a|b` split its
# row into one cell more, and `notes/**/*.md` rendered bold and italic (`~` strikes through, `&`
# starts an entity, `$` GitHub's math); a line break ended the row.
MARKDOWN = re.compile(r"([\\`*_|<>\[\]~&$])")
# In an --out folder: the sha256 of each report file this command wrote there.
WRITTEN_RECORD = ".lmtrain_report.json"
# An interrupted job that had saved no checkpoint: nothing of it to resume.
NOT_SAVED = "it saved no checkpoint, so run it again"


def md_cell(text: str) -> str:
    return MARKDOWN.sub(r"\\\1", " ".join(text.splitlines()))


def ranked(jobs: list[Job], maximize: bool = False) -> list[Job]:
    """Finished jobs by their metric (best first), then diverged, failed and unreadable ones."""
    order = {"ok": 0, "diverged": 1, "running": 2, "preempted": 3, "interrupted": 3}
    order |= {"failed": 4, "unreadable": 5, "not run": 6}

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
    one_value: dict[str, str]  # swept keys with one value in these jobs (the others left out)


def ranking_metric(jobs: list[Job], sweep_dir: Path) -> str:
    """The optimized_metric the jobs are ranked by: every job's that could be read must agree
    (one ranked job 0's val/loss against job 1's train/grad_norm). A job whose files cannot be
    read may not know its own (no config.yaml: val/loss): it ranks last whatever it is."""
    readable = [job for job in jobs if not job.problem]
    nums: dict[str, list[str]] = {}
    for job in readable:
        nums.setdefault(job.optimized_metric, []).append(str(job.num))
    if len(nums) > 1:
        each = "; ".join(
            f"{metric} in job{'s' if len(n) > 1 else ''} {', '.join(n)}"
            for metric, n in nums.items()
        )
        raise LMTrainError(
            f"the jobs of {str(sweep_dir)!r} were optimized for different metrics "
            f"(optimized_metric: {each}), which one ranking cannot compare, and lmtrain.report "
            "has no option to rank by one: report the jobs of each metric on their own (copy their "
            "job folders into a new folder and pass that)"
        )
    return (readable or jobs)[0].optimized_metric


def table(jobs: list[Job], metric: str | None = None, swept: Set[str] = frozenset()) -> Table:
    """The jobs' rows, with a column for each override that differs between them; `metric`
    (default: the first job's optimized_metric) first of the metrics. A key the sweep sweeps
    (`swept`) with one value among them (its other jobs left out) is not "the same in every job"."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    same = {
        k: jobs[0].overrides[k]
        for k in keys
        if all(k in job.overrides and job.overrides[k] == jobs[0].overrides[k] for job in jobs)
    }
    fixed = {k: v for k, v in same.items() if k not in swept}
    varying = [k for k in keys if k not in same]
    metric = metric or (jobs[0].optimized_metric if jobs else "val/loss")
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
    return Table(header, rows, varying, fixed, {k: v for k, v in same.items() if k in swept})


def fmt(value: str | float | None, digits: int | None = 4) -> str:
    """A table cell: metrics to `digits` significant digits (None: every digit), none as empty."""
    if value is None or isinstance(value, str):
        return value or ""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value)) if digits is None else f"{value:.{digits}g}"


def write_report(
    sweep_dir: str | Path,
    maximize: bool | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write report.csv, report.md and val_curves.png into `out_dir` (default: the sweep folder),
    each whole or not at all; return their paths. The folder is checked before the jobs are read
    (W&B logs take a while). `maximize` None follows the sweeper (an Optuna study's direction).
    In an `out_dir`, files of those names that this command did not write are replaced only
    with `overwrite`."""
    sweep_dir = Path(sweep_dir).expanduser()
    out = Path(out_dir).expanduser() if out_dir is not None else sweep_dir
    job_folders(sweep_dir)  # no jobs: that error before one about the output folder
    if out.resolve() != sweep_dir.resolve() and (out / ".jobs" / "sweep.json").exists():
        raise LMTrainError(
            f"--out {str(out)!r} is another sweep's folder, whose report this one would replace: "
            "pass a folder of its own"
        )
    refuse_unwritable(out, out_dir is not None)  # made only when the report is written
    paths = {"csv": out / "report.csv", "md": out / "report.md", "png": out / "val_curves.png"}
    elsewhere = out.resolve() != sweep_dir.resolve()
    record = [out / WRITTEN_RECORD] if elsewhere else []  # written after the three
    for path in [*paths.values(), *record]:  # before any is replaced: all or none
        if path.exists() and not path.is_file():
            raise LMTrainError(
                f"{str(path)!r} is not a file that the report can replace: move it, or pass "
                "--out <another folder>"
            )
    if elsewhere and not overwrite:
        refuse_files_not_written_here(out, list(paths.values()))
    jobs = read_jobs(sweep_dir)  # none left: an LMTrainError
    metric = ranking_metric(jobs, sweep_dir)
    if maximize is None:
        maximize = next((job.direction for job in jobs if job.direction), "") == "maximize"
    jobs = ranked(jobs, maximize)
    tab = table(jobs, metric, swept_keys(sweep_dir))
    # No curve, no plot (its blank axes said nothing); a job without one is named in a warning.
    plotted, missing = any(job.curve for job in jobs), without_curve(jobs)
    if missing:
        warn(f"{missing}: " + ("left out of val_curves.png" if plotted else "no val_curves.png"))
    swept_one = ", ".join(f"`{k}={v}`" for k, v in tab.one_value.items())
    not_run = sum(job.not_run for job in jobs)
    trials_left = cut_short(sweep_dir)[1]
    not_run = f" ({not_run} did not run: the sweep was cut short)" if not_run else ""
    not_run += f" ({trials_left} trials did not run: the search was cut short)" * (trials_left > 0)
    not_run += " (no end recorded: still running, or its process was killed)" * unended(sweep_dir)
    stopped = [job for job in jobs if job.status == "interrupted"]
    rest = rest_folders(sweep_dir) if not_run else []  # the `_rest` command's sweep folders
    lines = [
        f"# Sweep {sweep_dir.resolve().name}: {len(jobs)} jobs by {metric}{not_run}",
        "",
        "| " + " | ".join(md_cell(h) for h in tab.header) + " |",
        "|" + "---|" * len(tab.header),
        *("| " + " | ".join(md_cell(fmt(v)) for v in row) + " |" for row in tab.rows),
        "",
        "Same in every job: "
        + (", ".join(f"`{k}={v}`" for k, v in tab.fixed.items()) or "nothing"),
        *([f"\nSwept, one value in these jobs: {swept_one}"] if swept_one else []),
        *(f"\nJob {job.num} is still running." for job in jobs if job.running),
        *(f"\nJob {j.num} was preempted: {j.resume}." for j in jobs if j.status == "preempted"),
        *(f"\nJob {j.num} was interrupted (Ctrl-C): {j.resume or NOT_SAVED}." for j in stopped),
        *(f"\nThe jobs left went on in {p}: `python -m lmtrain.report {p}`." for p in rest),
        *(
            f"\nJob {job.num} is unreadable: {job.problem}."
            for job in jobs
            if job.problem and not job.running
        ),
        "",
        f"![val/loss]({paths['png'].name})" if plotted else "No job has a val/loss curve.",
    ]
    try:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(paths["csv"]) as f:
            csv.writer(f).writerows([tab.header, *([fmt(v, None) for v in r] for r in tab.rows)])
        with atomic_write(paths["md"]) as f:
            f.write("\n".join(lines) + "\n")
        if plotted:
            with atomic_write(paths["png"], "wb") as f:
                plot_curves(jobs, f, tab.varying)
        else:  # an earlier report's, which this one replaces (checked above, as when written)
            paths.pop("png").unlink(missing_ok=True)
        if elsewhere:
            digests = {p.name: file_sha256(p) for p in paths.values()}
            with atomic_write(out / WRITTEN_RECORD) as f:
                json.dump(digests, f, indent=2)
    except OSError as err:
        raise unwritable(out, err, out_dir is not None) from None
    return paths


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def refuse_files_not_written_here(out: Path, paths: list[Path]) -> None:
    """Raise LMTrainError for a file of `paths` that is not a report this command wrote into
    `out`, unchanged since (a user's own report.md, or one they edited)."""
    try:
        written = json.loads((out / WRITTEN_RECORD).read_text())
    except (OSError, ValueError):
        written = {}
    for path in paths:
        if path.is_file() and (
            not isinstance(written, dict) or written.get(path.name) != file_sha256(path)
        ):
            raise LMTrainError(
                f"--out {str(out)!r} holds a {path.name} that lmtrain.report did not write there "
                "(or that was changed since): pass --out <another folder>, or add --overwrite "
                "to replace it"
            )


def refuse_unwritable(out: Path, chosen: bool) -> None:
    """Raise when `out`, or the folder it would be made in, cannot be written. It is not made
    here: a refusal after this (no job left, mixed metrics) left a new --out folder, empty."""
    existing = next(p for p in (out, *out.absolute().parents) if p.exists() or p.is_symlink())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
    except OSError as err:
        raise unwritable(out, err, chosen) from None


def unwritable(out: Path, err: OSError, chosen: bool) -> LMTrainError:
    """A folder we may not fill (read-only, another user's sweep, disk full): --out is the way."""
    why = err.strerror or first_line(err)
    fix = "a writable --out" if chosen else "--out <a writable folder>, or make the folder writable"
    return LMTrainError(f"cannot write the report into {str(out)!r} ({why}): pass {fix}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmtrain.report",
        description="Table (CSV, Markdown) and val/loss curves (PNG) of a multirun's jobs.",
    )
    parser.add_argument("sweep_dir", help="a multirun folder, e.g. logs/train/multiruns/<time>")
    maximize_help = "higher optimized_metric is better (default: the sweeper's direction)"
    parser.add_argument("--maximize", action="store_true", default=None, help=maximize_help)
    parser.add_argument("--out", metavar="FOLDER", help="write here, not into the sweep folder")
    overwrite_help = "replace report files in --out that this command did not write there"
    parser.add_argument("--overwrite", action="store_true", help=overwrite_help)
    args = parser.parse_args(argv)
    try:
        paths = write_report(
            args.sweep_dir, maximize=args.maximize, out_dir=args.out, overwrite=args.overwrite
        )
    except LMTrainError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(paths["md"].read_text())
    print("\n".join(f"wrote {p}" for p in paths.values()))


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        main()
