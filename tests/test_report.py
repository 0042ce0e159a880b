"""`lmtrain.report` in parts. The report of a real sweep (an Optuna study with a failed and a
diverged trial, curves from W&B) is tested in test_sweeps.py, on the study that file runs."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.loggers import CSVLogger

from lmtrain import report
from lmtrain.report import Job, ranked
from lmtrain.utils.sweep_jobs import read_curve
from lmtrain.utils.sweep_ledger import end_ledger, record_job, start_ledger
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.faults import drop_root_file_access


def job(num: int, problem: str = "", **metrics: float) -> Job:
    return Job(num, Path(str(num)), {}, metrics, optimized_metric="val/loss", problem=problem)


# What makes a folder a sweep's: Hydra saves the sweep's config there before its first job.
MULTIRUN_YAML = "hydra:\n  mode: MULTIRUN\n"


def forge_job(
    sweep: Path, num: int, metrics: dict[str, float], config: bool = True, subdir: str = ""
) -> Path:
    """Job `num` of a sweep over the learning rate, in `sweep/subdir/<num>` (a hydra.sweep.subdir
    may nest it), as Hydra and lmtrain.train leave it."""
    hydra_dir = sweep / subdir / str(num) / ".hydra"
    hydra_dir.mkdir(parents=True)
    if not (sweep / "multirun.yaml").exists():
        (sweep / "multirun.yaml").write_text(MULTIRUN_YAML)
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"model.optimizer.lr=0.{num + 1}"]))
    if config:
        (hydra_dir / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": "val/loss"}))
    (hydra_dir.parent / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return hydra_dir.parent


def report_rows(folder: Path) -> list[tuple[str, str, str]]:
    """(job, status, val/loss) of every row of report.csv, in its order."""
    with (folder / "report.csv").open() as f:
        return [(row["job"], row["status"], row["val/loss"]) for row in csv.DictReader(f)]


def test_ranking_puts_the_best_first_then_diverged_failed_and_unreadable() -> None:
    jobs = [
        job(0),
        job(1, **{"val/loss": 2.0}),
        job(2, **{"val/loss": math.nan}),
        job(3, **{"val/loss": 1.5}),
        job(4, problem="metrics.json is damaged", **{"val/loss": 0.5}),
    ]
    assert [j.num for j in ranked(jobs)] == [3, 1, 2, 0, 4]
    assert [j.status for j in ranked(jobs)] == ["ok", "ok", "diverged", "failed", "unreadable"]
    assert [j.num for j in ranked(jobs, maximize=True)] == [1, 3, 2, 0, 4]


def test_curve_is_read_from_a_csv_logger_when_there_is_no_wandb_run(tmp_path: Path) -> None:
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")  # logger=csv writes this
    logger.log_metrics({"val/loss": 3.0}, step=9)
    logger.log_metrics({"train/loss": 2.9}, step=10)
    logger.log_metrics({"val/loss": 2.5}, step=19)
    logger.save()
    assert read_curve(tmp_path) == [(9.0, 3.0), (19.0, 2.5)]


def test_report_refuses_a_folder_that_is_not_a_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {str(tmp_path)!r} is not a sweep folder (no multirun.yaml or .jobs/ there): "
        "pass one sweep's folder, e.g. logs/train/multiruns/<time>"
    ]
    # A sweep whose jobs never started: a sweep folder, with no job in it.
    (tmp_path / "multirun.yaml").write_text(MULTIRUN_YAML)
    with pytest.raises(SystemExit):
        report.main([str(tmp_path)])
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {str(tmp_path)!r} holds no multirun jobs (no */.hydra/overrides.yaml): pass a "
        "sweep folder, e.g. logs/train/multiruns/<time>"
    ]


def test_report_of_a_folder_that_does_not_exist_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said the missing folder "holds no multirun jobs".
    for name, what in (("nope", "does not exist"), ("file.txt", "is a file")):
        (tmp_path / "file.txt").write_text("x")
        with pytest.raises(SystemExit):
            report.main([str(tmp_path / name)])
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: {str(tmp_path / name)!r} {what}: pass a sweep folder, e.g. "
            "logs/train/multiruns/<time>"
        ]


def test_damaged_jobs_are_shown_as_unreadable_and_the_others_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated metrics.json, a lost config, a numbered folder without .hydra: each is one
    warning and an `unreadable` row, ranked last; a damaged curve is only a warning."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    truncated = forge_job(sweep, 1, {"val/loss": 1.5, "train/loss": 1.4}) / "metrics.json"
    truncated.write_text(truncated.read_text()[:20])
    forge_job(sweep, 2, {"val/loss": 1.0}, config=False)
    bad_curve = forge_job(sweep, 3, {"val/loss": 3.0}) / "csv" / "metrics.csv"
    bad_curve.parent.mkdir()
    bad_curve.write_text("step,val/loss\n9,abc\n")
    (sweep / "4").mkdir()  # a job killed before Hydra wrote its .hydra/
    report.main([str(sweep)])

    assert report_rows(sweep) == [
        ("0", "ok", "2"),
        ("3", "ok", "3"),
        ("1", "unreadable", ""),
        ("2", "unreadable", "1"),  # what it holds, though it may not rank by val/loss
        ("4", "unreadable", ""),
    ]
    missing = "cannot be read (No such file or directory)"
    warnings = capsys.readouterr().err.splitlines()
    assert warnings[0].startswith(f"warning: job folder {sweep / '1'}: metrics.json is damaged (")
    assert warnings[1:] == [
        f"warning: job folder {sweep / '2'}: .hydra/config.yaml {missing}: shown as unreadable",
        f"warning: the val/loss curve of job folder {sweep / '3'} cannot be read (could not "
        "convert string to float: 'abc')",
        f"warning: job folder {sweep / '4'}: .hydra/overrides.yaml {missing}; .hydra/config.yaml "
        f"{missing}: shown as unreadable",
    ]
    markdown = (sweep / "report.md").read_text()
    assert f"Job 2 is unreadable: .hydra/config.yaml {missing}." in markdown


def test_a_metric_that_is_no_number_makes_its_job_unreadable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`true` ranked first as 1, and a string read as no value showed the job as diverged."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    forge_job(sweep, 1, {"val/loss": True})
    forge_job(sweep, 2, {"val/loss": "1.5"})
    report.main([str(sweep)])
    unreadable = [("1", "unreadable", ""), ("2", "unreadable", "")]
    assert report_rows(sweep) == [("0", "ok", "2"), *unreadable]
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"warning: job folder {sweep / '1'}: metrics.json holds val/loss=True, not a number: "
        "shown as unreadable",
        f"warning: job folder {sweep / '2'}: metrics.json holds val/loss='1.5', not a number: "
        "shown as unreadable",
    ]


def test_a_failed_job_resumed_to_its_end_is_reported_by_its_new_metrics(tmp_path: Path) -> None:
    """The ledger said job 0 failed, so any metrics.json there was shown as failed: also the one
    a later `resume=<job folder>` wrote. What was there when it failed still is."""
    sweep = tmp_path / "sweep"
    start_ledger(sweep)
    first = forge_job(sweep, 0, {"val/loss": 2.0})  # an earlier sweep's result
    record_job(sweep, 0, first, ok=False, why="RuntimeError: boom")
    end_ledger(sweep, ["0"])
    assert [job.status for job in report.read_jobs(sweep)] == ["failed"]
    (first / "metrics.json").write_text(json.dumps({"val/loss": 1.5}))  # the resume's
    (job,) = report.read_jobs(sweep)
    assert (job.status, job.value) == ("ok", 1.5)


def test_a_job_resumed_on_its_own_keeps_the_sweeps_overrides(tmp_path: Path) -> None:
    """`resume=<job folder>` writes its own command's overrides.yaml and keeps the sweep's
    under .hydra/previous/: the report lost the job's learning rate and showed `resume`."""
    sweep = tmp_path / "sweep"
    first = forge_job(sweep, 0, {"val/loss": 2.0})
    forge_job(sweep, 1, {"val/loss": 1.0})
    previous = first / ".hydra" / "previous" / "2026-12-05_01-00-00_000000"
    previous.mkdir(parents=True)
    (first / ".hydra" / "overrides.yaml").rename(previous / "overrides.yaml")
    resumed = [f"resume={first}", "trainer.max_steps=6"]
    (first / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(resumed))
    jobs = report.read_jobs(sweep)
    assert jobs[0].overrides == {"model.optimizer.lr": "0.1", "trainer.max_steps": "6"}
    assert jobs[1].overrides == {"model.optimizer.lr": "0.2"}
    # An overwrite_run=true sweep over the folder writes its .hydra/ over that one, leaving
    # previous/: an earlier sweep's learning rate was shown for a job that never used it.
    (first / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["seed=2"]))
    assert report.read_jobs(sweep)[0].overrides == {"seed": "2"}
    # Resumed in turn: back to that sweep's own record only.
    later = first / ".hydra" / "previous" / "2026-12-05_02-00-00_000000"
    later.mkdir()
    (first / ".hydra" / "overrides.yaml").rename(later / "overrides.yaml")
    (first / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"resume={first}"]))
    assert report.read_jobs(sweep)[0].overrides == {"seed": "2"}


def test_a_report_file_name_taken_by_a_folder_is_named_and_nothing_is_replaced(
    tmp_path: Path,
) -> None:
    """val_curves.png a folder: the error named only the sweep folder, after report.csv and
    report.md had been replaced."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    (sweep / "report.csv").write_text("an earlier report\n")
    (sweep / "val_curves.png").mkdir()
    result = run_cli("report", str(sweep))
    assert_one_line_error(result, f"'{sweep / 'val_curves.png'}' is not a file that the report")
    assert (sweep / "report.csv").read_text() == "an earlier report\n"
    assert not (sweep / "report.md").exists()


def test_out_into_another_sweeps_folder_is_refused(tmp_path: Path) -> None:
    """`report sw2 --out sw1` replaced sw1's report with one headed `# Sweep sw2`."""
    first, second = tmp_path / "sw1", tmp_path / "sw2"
    for sweep in (first, second):
        start_ledger(sweep)
        forge_job(sweep, 0, {"val/loss": 2.0})
    result = run_cli("report", str(second), "--out", str(first))
    assert_one_line_error(result, f"--out '{first}' is another sweep's folder")
    assert not (first / "report.csv").exists()


def test_a_folder_of_sweeps_is_refused_rather_than_merged(tmp_path: Path) -> None:
    """logs/train/multiruns/ given instead of one sweep: two sweeps' job 0 and 1 in one table."""
    for name in ("a", "b"):
        forge_job(tmp_path / "runs" / name, 0, {"val/loss": 2.0})
        (tmp_path / "runs" / name / "multirun.yaml").write_text("{}\n")
    result = run_cli("report", str(tmp_path / "runs"))
    assert_one_line_error(result, "holds sweeps (a, b), not the jobs of one: pass one sweep's")
    assert not (tmp_path / "runs" / "report.csv").exists()


def test_out_takes_the_report_and_leaves_the_sweep_folder_as_it_was(tmp_path: Path) -> None:
    """--out takes the files; the sweep folder, maybe a colleague's, is left as it was."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    report.main([str(sweep), "--out", str(tmp_path / "reports" / "sweep")])
    assert report_rows(tmp_path / "reports" / "sweep") == [("0", "ok", "2")]
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]


def test_report_into_an_unwritable_out_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep, a_file = tmp_path / "sweep", tmp_path / "a_file"
    forge_job(sweep, 0, {"val/loss": 2.0})
    a_file.write_text("")
    with pytest.raises(SystemExit) as exit_:
        report.main([str(sweep), "--out", str(a_file / "report")])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: cannot write the report into {str(a_file / 'report')!r} (Not a directory): "
        "pass a writable --out"
    ]


@pytest.mark.skipif(os.geteuid() != 0 and os.access("/", os.W_OK), reason="needs file modes")
def test_read_only_sweep_is_one_line_that_suggests_out(tmp_path: Path) -> None:
    """Root writes anywhere through CAP_DAC_OVERRIDE: the report runs without it (still uid 0)."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    sweep.chmod(0o555)
    result = run_cli(
        "report", str(sweep), preexec_fn=drop_root_file_access if os.geteuid() == 0 else None
    )
    assert_one_line_error(
        result,
        f"cannot write the report into {str(sweep)!r} (Permission denied): pass --out <a "
        "writable folder>, or make the folder writable",
    )
    assert sorted(p.name for p in sweep.iterdir()) == ["0", "multirun.yaml"]


def test_jobs_in_nested_folders_are_reported(tmp_path: Path) -> None:
    """hydra.sweep.subdir=lr_${...}/seed_${seed} puts jobs two levels down; the report read
    one level and found no job."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0}, subdir="lr_0.1")
    forge_job(sweep, 1, {"val/loss": 1.5}, subdir="lr_0.2")
    jobs = report.read_jobs(sweep)
    assert [(job.folder, job.status, job.value) for job in jobs] == [
        (sweep / "lr_0.1" / "0", "ok", 2.0),
        (sweep / "lr_0.2" / "1", "ok", 1.5),
    ]


def test_a_huge_number_and_a_non_ascii_digit_folder_do_not_stop_the_report(tmp_path: Path) -> None:
    """float() of a 400-digit whole number overflowed, and a folder named "²" passed
    `str.isdigit` but not `int`: each ended the report in a traceback."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    huge = forge_job(sweep, 1, {"val/loss": 1.0}) / "metrics.json"
    huge.write_text('{"val/loss": 1.5, "train/loss": 1' + "0" * 400 + "}")
    (sweep / "²").mkdir()
    report.main([str(sweep)])
    assert report_rows(sweep) == [("1", "ok", "1.5"), ("0", "ok", "2")]


def test_a_job_still_running_is_shown_as_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job whose folder a live process has locked (as `lmtrain.train` does while it runs)
    was shown as failed, its metrics.json not written yet."""
    sweep = tmp_path / "sweep"
    forge_job(sweep, 0, {"val/loss": 2.0})
    running = forge_job(sweep, 1, {})
    (running / "metrics.json").unlink()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(running / ".lock")], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        report.main([str(sweep)])
    finally:
        holder.kill()
        holder.wait()
    assert report_rows(sweep) == [("0", "ok", "2"), ("1", "running", "")]
    assert "shown as running (the sweep is on)" in capsys.readouterr().err
    assert "Job 1 is still running." in (sweep / "report.md").read_text()
    report.main([str(sweep)])  # its process gone, the job failed
    assert report_rows(sweep) == [("0", "ok", "2"), ("1", "failed", "")]


# A process that holds a run folder's lock as lmtrain.train does, until killed.
HOLD_LOCK = """
import sys, time
from pathlib import Path
from lmtrain.utils import locks
locks.acquire(Path(sys.argv[1]))
print("locked", flush=True)
time.sleep(300)
"""


def test_markdown_in_an_override_stays_in_its_cell(tmp_path: Path) -> None:
    """An override's `|` split its row into one cell more than the header, and `**/*.md`
    rendered as bold and italic (red team rev_exrep)."""
    sweep = tmp_path / "sweep"
    values = ["a|b", "notes/**/*.md", "<img src=x>", "~~gone~~ $x$", "two\nlines"]
    for num, value in enumerate(values):
        job_dir = forge_job(sweep, num, {"val/loss": 2.0 + num})
        overrides = [f"model.optimizer.lr=0.{num + 1}", f"+note={value}"]
        (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    report.main([str(sweep)])

    lines = (sweep / "report.md").read_text().splitlines()
    table = [line for line in lines if line.startswith("|")]
    cells = [re.split(r"(?<!\\)\|", line)[1:-1] for line in table]
    assert {len(row) for row in cells} == {len(cells[0])}
    notes = [row[cells[0].index(" note ")].strip() for row in cells[2:]]
    assert notes == [
        r"a\|b",
        r"notes/\*\*/\*.md",
        r"\<img src=x\>",
        r"\~\~gone\~\~ \$x\$",
        "two lines",
    ]


def test_make_report_finds_the_newest_sweep_under_project_root(tmp_path: Path) -> None:
    """`make report` looks where the runs go: $PROJECT_ROOT/logs when that is set (docs)."""
    older = tmp_path / "logs" / "train" / "multiruns" / "2026-01-01_00-00-00"
    newer = tmp_path / "logs" / "train" / "multiruns" / "2026-01-02_00-00-00"
    older.mkdir(parents=True)
    newer.mkdir(parents=True)
    os.utime(older, (1_000, 1_000))
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    root = Path(__file__).resolve().parents[1]
    dry = ["make", "--no-print-directory", "-n", "report"]
    result = subprocess.run(dry, cwd=root, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f'-m lmtrain.report "{newer}/"' in result.stdout, result.stdout


def test_out_replaces_only_a_report_it_wrote_there(tmp_path: Path) -> None:
    """Red team: `--out ~/docs` replaced the user's own report.md, with exit code 0."""
    sweep, out = tmp_path / "sweep", tmp_path / "docs"
    forge_job(sweep, 0, {"val/loss": 2.0})
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    result = run_cli("report", str(sweep), "--out", str(out))
    assert_one_line_error(
        result,
        f"--out '{out}' holds a report.md that lmtrain.report did not write there",
        "add --overwrite to replace it",
    )
    assert (out / "report.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]

    report.main([str(sweep), "--out", str(out), "--overwrite"])
    assert report_rows(out) == [("0", "ok", "2")]
    forge_job(sweep, 1, {"val/loss": 1.0})  # a report it wrote is replaced when run again
    report.main([str(sweep), "--out", str(out)])
    assert report_rows(out) == [("1", "ok", "1"), ("0", "ok", "2")]
    with (out / "report.md").open("a") as f:  # ... but not once the user has edited it
        f.write("my conclusions\n")
    with pytest.raises(SystemExit):
        report.main([str(sweep), "--out", str(out)])
    assert (out / "report.md").read_text().endswith("my conclusions\n")
