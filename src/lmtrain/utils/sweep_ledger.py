"""A sweep's ledger: one record per job that ended, in `<sweep folder>/.jobs/`.

Job folders alone cannot say how a sweep went. Two jobs can share one folder (a
`hydra.sweep.subdir` that does not name the job), so a refused second job leaves no folder of its
own; and a job that failed in a folder an earlier sweep filled (`overwrite_run=true`) leaves that
sweep's metrics.json behind, which reads as a success. So every job that ends in
`run_for_sweeper` (rank 0) writes `<num>.json`: its folder, whether it finished, and why not.
`SweepOutcome` starts the ledger with a fresh sweep id (`sweep.json`); records carry it, so
that records of an earlier sweep in the same folder are told apart without trusting file times,
which a copy (`cp -r`) or another node's clock changes. A job killed outright writes no record:
its folder, without metrics.json, still tells.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmtrain.utils.io import write_json

LEDGER = ".jobs"
SWEEP_FILE = "sweep.json"
BEFORE = "before"  # sweep.json: the job folders an earlier sweep left there (`start_ledger`)
INTERRUPTED = "interrupted (Ctrl-C)"  # the `why` of a job a Ctrl-C stopped


@dataclass(frozen=True)
class JobRecord:
    """How one job of the sweep ended: `folder` relative to the sweep folder where it is inside
    it; `why`: the reason a failed job gave, in one line."""

    num: int
    folder: str
    ok: bool
    why: str = ""
    metrics: str | None = None  # a failed job's metrics_fingerprint of its folder then
    resume: str = ""  # a preempted job's command to resume it (it saved last.ckpt)


def start_ledger(sweep_dir: Path) -> None:
    """Give the sweep now starting in `sweep_dir` a new id, which its jobs' records carry, and
    note the job folders an earlier sweep left there (`overwrite_run=true`): until this sweep
    ends and names its own, only they tell the report which folders it has not run in yet and
    which metrics.json are not its own (a sweep killed, or still on)."""
    before = {
        folder_name(config.parent.parent, sweep_dir): [
            metrics_fingerprint(config.parent.parent),
            config_stamp(config.parent.parent),
        ]
        for config in sweep_dir.glob("**/.hydra/config.yaml")
    }
    write_json(sweep_dir / LEDGER / SWEEP_FILE, {"sweep": uuid.uuid4().hex, BEFORE: before})


def config_stamp(folder: Path) -> list[int]:
    """Size and mtime (ns) of `folder/.hydra/config.yaml`, which Hydra rewrites as a job starts
    there ([] if none). Only compared with itself: a copy (`cp -a`) keeps both."""
    try:
        stat = (folder / ".hydra" / "config.yaml").stat()
    except OSError:
        return []
    return [stat.st_size, stat.st_mtime_ns]


def earlier_job(sweep_dir: Path, folder: Path, before: dict) -> tuple[str, bool] | None:
    """For `folder`, a job folder an earlier sweep left (`before`: `start_ledger`'s note): the
    metrics_fingerprint it had then, and whether a job of the sweep last started there has
    started in it since. None: a folder that sweep made, or a ledger without the note."""
    name = ledger_name(folder, sweep_dir, set(before))
    entry = before.get(name) if name is not None else None
    if not isinstance(entry, list) or len(entry) != 2:
        return None
    return str(entry[0]), config_stamp(folder) != entry[1]


def current_sweep(sweep_dir: Path) -> str | None:
    """The id of the sweep last started in `sweep_dir`, or None (no ledger, or a damaged one)."""
    sweep_id = read_sweep_file(sweep_dir).get("sweep")
    return sweep_id if isinstance(sweep_id, str) else None


def read_sweep_file(sweep_dir: Path) -> dict:
    try:
        data = json.loads((sweep_dir / LEDGER / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def end_ledger(sweep_dir: Path, folders: list[str]) -> None:
    """Name the job folders of the sweep that has just ended in `sweep_dir` (as `folder_name`
    gives them): with `overwrite_run=true`, an earlier sweep's other job folders are still there,
    and the report would rank them as this sweep's."""
    sweep_id = current_sweep(sweep_dir)
    if sweep_id is not None:
        data = {"sweep": sweep_id, "jobs": folders, BEFORE: read_sweep_file(sweep_dir).get(BEFORE)}
        with contextlib.suppress(OSError):
            write_json(sweep_dir / LEDGER / SWEEP_FILE, data)


def record_cut_short(sweep_dir: Path, not_run: list[list[str]], trials_left: int = 0) -> None:
    """Note in the ledger that the sweep stopped early (a preempted job ends it): the overrides
    of each job that did not run (a grid's), or how many trials an Optuna search had left."""
    data = read_sweep_file(sweep_dir)
    if isinstance(data.get("sweep"), str):
        data["not_run"], data["trials_left"] = not_run, trials_left
        with contextlib.suppress(OSError):
            write_json(sweep_dir / LEDGER / SWEEP_FILE, data)


def unended(sweep_dir: Path) -> bool:
    """Whether the sweep last run in `sweep_dir` recorded no end (`end_ledger`, or
    `record_cut_short`): still running, or its process was killed (kill -9) between two jobs."""
    data = read_sweep_file(sweep_dir)
    return isinstance(data.get("sweep"), str) and "jobs" not in data and "not_run" not in data


def cut_short(sweep_dir: Path) -> tuple[list[list[str]], int]:
    """The jobs (their overrides) and trials that the sweep last run in `sweep_dir` left
    unrun (`record_cut_short`); none for a sweep that ran to its end."""
    data = read_sweep_file(sweep_dir)
    jobs, left = data.get("not_run"), data.get("trials_left")
    jobs = (
        [[str(o) for o in job] for job in jobs if isinstance(job, list)]
        if isinstance(jobs, list)
        else []
    )
    return jobs, left if isinstance(left, int) and not isinstance(left, bool) else 0


def sweep_jobs(sweep_dir: Path) -> set[str] | None:
    """The job folders of the sweep last run in `sweep_dir` (None: it has not ended, or its
    ledger predates the list)."""
    jobs = read_sweep_file(sweep_dir).get("jobs")
    return {str(j) for j in jobs} if isinstance(jobs, list) else None


def record_job(
    sweep_dir: Path, num: int, output_dir: Path, ok: bool, why: str = "", resume: str = ""
) -> None:
    """Write how job `num` ended, under the current sweep's id; `resume`: how to resume a job
    that was preempted. A sweep started without the ledger (no `SweepOutcome` in
    hydra.callbacks) gets no records."""
    sweep_id = current_sweep(sweep_dir)
    if sweep_id is None:
        return
    folder = folder_name(output_dir, sweep_dir)
    record = {"sweep": sweep_id, "job": num, "folder": folder, "ok": ok, "why": why}
    if resume:
        record["resume"] = resume
    if not ok:  # a metrics.json that differs later was written since (a resume of the job)
        record["metrics"] = metrics_fingerprint(output_dir)
    # A ledger that cannot be written leaves the folder rule (SweepOutcome) to judge the job.
    with contextlib.suppress(OSError):
        write_json(sweep_dir / LEDGER / f"{num}.json", record)


def metrics_fingerprint(folder: Path) -> str:
    """sha256 of `folder`'s metrics.json, or "none" (no file, or unreadable)."""
    try:
        return hashlib.sha256((folder / "metrics.json").read_bytes()).hexdigest()
    except OSError:
        return "none"


def folder_name(folder: Path, sweep_dir: Path) -> str:
    """A job folder as records name it: relative to the sweep folder, or whole where it lies
    outside it (an absolute `hydra.sweep.subdir`)."""
    try:
        return str(folder.resolve().relative_to(sweep_dir.resolve()))
    except ValueError:
        return str(folder)


def ledger_name(folder: Path, sweep_dir: Path, known: set[str]) -> str | None:
    """The name among `known` (the ledger's) of `folder`, a job folder found under `sweep_dir`:
    its path relative to the sweep folder as found first, so that a job folder that is now a
    symlink (moved to a bigger disk) keeps its name, then resolved as `folder_name` gives it
    (a folder written through a symlink). None where `known` holds neither."""
    names = [folder_name(folder, sweep_dir)]
    if folder.is_relative_to(sweep_dir):
        names.insert(0, str(folder.relative_to(sweep_dir)))
    return next((name for name in names if name in known), None)


def renamed_jobs(
    strays: list[Path], missing: list[str], records: list[JobRecord]
) -> dict[Path, tuple[str, int, int]]:
    """Which of `strays` (job folders the ended sweep's ledger does not name) may be ones it
    names that are `missing`, renamed (`mv 0 lr1e-3`): {folder: (the ledger's name, job number,
    how many strays fit that name)}; one is that job only where it is the only one to fit.
    The job's own `.hydra/hydra.yaml` tells: Hydra saved there its job number and the folder it
    wrote, whose path must end with the missing name, and that job's record in the ledger (a
    job killed outright left none) must name the same folder. A folder that fits two names is
    left out."""
    recorded = {record.num: record.folder for record in records}
    fits: dict[str, list[tuple[Path, int]]] = {}
    for folder in strays:
        num, written = saved_job(folder)
        names = [
            name
            for name in missing
            if num is not None
            and recorded.get(num, name) == name
            and written.parts[-len(Path(name).parts) :] == Path(name).parts
        ]
        if num is not None and len(names) == 1:
            fits.setdefault(names[0], []).append((folder, num))
    return {
        folder: (name, num, len(found)) for name, found in fits.items() for folder, num in found
    }


def saved_job(folder: Path) -> tuple[int | None, Path]:
    """The job number and output folder that Hydra saved in `folder/.hydra/hydra.yaml` (None
    and an empty path where it cannot be read)."""
    try:
        hydra = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]
        num, written = hydra["job"]["num"], hydra["runtime"]["output_dir"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None, Path()
    if isinstance(num, bool) or not isinstance(num, int) or not isinstance(written, str):
        return None, Path()
    return num, Path(written)


def shown_names(names: list[str], limit: int = 5) -> str:
    """`0, 1, 2`, or the first `limit` and how many in all."""
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def the_folders(names: list[str]) -> str:
    """`the job folder 0 that ... names is`, or `the job folders 0, 1 that ... names are`."""
    each = "the job folder" if len(names) == 1 else "the job folders"
    verb = "is" if len(names) == 1 else "are"
    return f"{each} {shown_names(names)} that the sweep's ledger .jobs/sweep.json names {verb}"


def not_a_job(folder: Path, missing: list[str], fit: tuple[str, int, int] | None) -> str:
    """The warning for a job folder that the ended sweep's ledger does not name; `fit`: the
    missing one it may be, renamed, and how many folders may be (`renamed_jobs`)."""
    left_out = f"job folder {folder}: not a job of the sweep last run there: left out"
    if not missing:  # an overwrite_run=true sweep with fewer jobs than the one before it
        return left_out
    if fit is not None:
        return (
            f"{left_out} ({the_folders(missing)} missing; the .hydra/hydra.yaml of this folder "
            f"and of {fit[2] - 1} other{'s' if fit[2] > 2 else ''} say that it is {fit[0]}, "
            "renamed: give the right one back its name to report it)"
        )
    return (
        f"{left_out} ({the_folders(missing)} missing, and this folder's .hydra/hydra.yaml does "
        f"not say that it is {'that one' if len(missing) == 1 else 'one of them'}, renamed: give "
        "it back its name to report it)"
    )


def no_job_left(sweep_dir: Path, members: list[str] | None) -> str:
    """The error when every job folder of `sweep_dir` was left out (warned of, one by one);
    `members` None: the sweep has not ended."""
    where = f"no job to report in {str(sweep_dir)!r}"
    if members is None:  # every folder there is an earlier sweep's (`start_ledger`)
        return (
            f"{where}: the sweep last started there (overwrite_run=true) has not run a job yet, "
            "and every job folder there is the earlier sweep's it replaces"
        )
    if not members:
        return (
            f"{where}: its ledger (.jobs/sweep.json) names no job folder of the sweep last run "
            "there, so every folder there was left out as an earlier sweep's"
        )
    return (
        f"{where}: {the_folders(members)} not there, and every other folder there was left out "
        "(renamed or moved? give the job folders back their names, or link them there)"
    )


def read_ledger(sweep_dir: Path) -> list[JobRecord]:
    """The records of the sweep last started in `sweep_dir`, by job number; records of earlier
    sweeps, and files that cannot be read, are left out."""
    sweep_id = current_sweep(sweep_dir)
    if sweep_id is None:
        return []
    records = []
    for path in sorted((sweep_dir / LEDGER).glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if data["sweep"] != sweep_id:
                continue
            metrics = data.get("metrics")
            metrics = metrics if isinstance(metrics, str) else None
            ok, resume = data["ok"] is True, data.get("resume")
            resume = resume if isinstance(resume, str) else ""
            records.append(
                JobRecord(int(data["job"]), str(data["folder"]), ok, data["why"], metrics, resume)
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(records, key=lambda record: record.num)


def failed_in(records: list[JobRecord], folder: str) -> list[JobRecord]:
    """The failed records of jobs that ran in `folder`."""
    return [record for record in records if record.folder == folder and not record.ok]


def finished_in(records: list[JobRecord], folder: str) -> bool:
    """Whether a job of this sweep finished in `folder`."""
    return any(record.folder == folder and record.ok for record in records)
