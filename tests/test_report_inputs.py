"""`lmtrain.report` of a real sweep's folder changed after the sweep, as a user changes one.

A job folder moved to a bigger disk and linked back was left out as "not a job of the sweep
last run there"; a renamed one too, with that same line, and with every job folder renamed (or a
ledger naming no job) the report ended in an IndexError traceback. Jobs optimized for different
metrics were ranked against each other under the first job's; and a `.lmtrain_report.json` that
is a folder in `--out` failed the report only after its three files were written there.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

pytestmark = pytest.mark.filterwarnings("ignore")

REPORT_FILES = ("report.csv", "report.md", "val_curves.png")


@pytest.fixture(scope="module")
def sweep_built(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A real sweep of two tiny jobs over the learning rate (metrics in csv/), run once."""
    tmp = tmp_path_factory.mktemp("report_inputs")
    sweep = tmp / "sweep"
    cli = tiny_cli(tmp, data_dir, "trainer.max_steps=2", "logger=csv")
    out = run_cli("train", "-m", *cli, "model.optimizer.lr=1e-3,3e-3", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert json.loads((sweep / ".jobs" / "sweep.json").read_text())["jobs"] == ["0", "1"]
    return sweep


@pytest.fixture
def sweep(sweep_built: Path, tmp_path: Path) -> Path:
    """A copy of the sweep's folder, this test's to change."""
    return Path(shutil.copytree(sweep_built, tmp_path / "sweep", symlinks=True))


def rows(folder: Path) -> list[tuple[str, str, str]]:
    """(job, status, model.optimizer.lr) of every row of report.csv (lr "": one job, whose
    learning rate is under the table, not a column)."""
    with (folder / "report.csv").open() as f:
        return [(r["job"], r["status"], r.get("model.optimizer.lr", "")) for r in csv.DictReader(f)]


def report(*args: object):
    return run_cli("report", *map(str, args))


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_a_job_folder_moved_elsewhere_and_linked_back_is_reported(
    sweep: Path, tmp_path: Path
) -> None:
    """`mv 0 /bigger/disk/0; ln -s /bigger/disk/0 0`: job 0 was left out, exit 0."""
    moved = tmp_path / "bigger_disk" / "0"
    moved.parent.mkdir()
    (sweep / "0").rename(moved)
    (sweep / "0").symlink_to(moved)
    out = report(sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    assert warnings(out.stderr) == []
    assert sorted(rows(sweep)) == [("0", "ok", "0.001"), ("1", "ok", "0.003")]


def test_a_renamed_job_folder_is_reported_as_the_job_its_hydra_yaml_names(sweep: Path) -> None:
    """`mv 0 lr1e-3`: its .hydra/hydra.yaml says it is job 0, written in the folder 0 that the
    ledger names and that is now missing: reported as job 0, with a line that says so."""
    (sweep / "0").rename(sweep / "lr1e-3")
    out = report(sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    assert warnings(out.stderr) == [
        f"warning: job folder {sweep / 'lr1e-3'}: job 0 of the sweep, in the folder '0' that its "
        "ledger names, renamed (its .hydra/hydra.yaml says so): reported as job 0"
    ]
    assert sorted(rows(sweep)) == [("0", "ok", "0.001"), ("1", "ok", "0.003")]


def test_a_renamed_job_folder_that_cannot_be_told_says_what_the_ledger_names(
    sweep: Path,
) -> None:
    """Renamed and without its hydra.yaml: left out, saying which job folder is missing."""
    (sweep / "0").rename(sweep / "lr1e-3")
    (sweep / "lr1e-3" / ".hydra" / "hydra.yaml").unlink()
    out = report(sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    assert warnings(out.stderr) == [
        f"warning: job folder {sweep / 'lr1e-3'}: not a job of the sweep last run there: left "
        "out (the job folder 0 that the sweep's ledger .jobs/sweep.json names is missing, and "
        "this folder's .hydra/hydra.yaml does not say that it is that one, renamed: give it "
        "back its name to report it)"
    ]
    assert rows(sweep) == [("1", "ok", "")]


def test_two_folders_claiming_one_missing_job_are_both_left_out(sweep: Path) -> None:
    """A copy of job 0's folder beside the renamed one: which is job 0 cannot be told."""
    shutil.copytree(sweep / "0", sweep / "copy_of_0")
    (sweep / "0").rename(sweep / "lr1e-3")
    out = report(sweep)
    assert out.returncode == 0, out.stderr[-3000:]
    assert warnings(out.stderr) == [
        f"warning: job folder {sweep / name}: not a job of the sweep last run there: left out "
        "(the job folder 0 that the sweep's ledger .jobs/sweep.json names is missing; the "
        ".hydra/hydra.yaml of this folder and of 1 other say that it is 0, renamed: give the "
        "right one back its name to report it)"
        for name in ("copy_of_0", "lr1e-3")
    ]
    assert rows(sweep) == [("1", "ok", "")]


def test_every_job_folder_renamed_is_one_error_line_and_nothing_written(sweep: Path) -> None:
    """Both renamed, without the hydra.yaml that names them: an IndexError traceback was."""
    for num, name in (("0", "lr1e-3"), ("1", "lr3e-3")):
        (sweep / num).rename(sweep / name)
        (sweep / name / ".hydra" / "hydra.yaml").unlink()
    out = report(sweep)
    line = assert_one_line_error(out)
    assert line == (
        f"error: no job to report in {str(sweep)!r}: the job folders 0, 1 that the sweep's "
        "ledger .jobs/sweep.json names are not there, and every other folder there was left out "
        "(renamed or moved? give the job folders back their names, or link them there)"
    )
    assert len(warnings(out.stderr)) == 2
    assert not any((sweep / name).exists() for name in REPORT_FILES)


def test_a_ledger_naming_no_job_is_one_error_line_and_nothing_written(sweep: Path) -> None:
    ledger = sweep / ".jobs" / "sweep.json"
    ledger.write_text(json.dumps({**json.loads(ledger.read_text()), "jobs": []}))
    out = report(sweep)
    line = assert_one_line_error(out)
    assert line == (
        f"error: no job to report in {str(sweep)!r}: its ledger (.jobs/sweep.json) names no job "
        "folder of the sweep last run there, so every folder there was left out as an earlier "
        "sweep's"
    )
    assert not any((sweep / name).exists() for name in REPORT_FILES)


def test_jobs_optimized_for_different_metrics_are_refused(sweep: Path, tmp_path: Path) -> None:
    """Job 1 optimized train/grad_norm: its value was ranked against job 0's val/loss, under a
    header `by train/grad_norm`, and exit 0. A new --out folder is not made for the refusal."""
    config = sweep / "1" / ".hydra" / "config.yaml"
    lines = config.read_text().splitlines()
    assert sum(line.startswith("optimized_metric:") for line in lines) == 1
    config.write_text(
        "\n".join(
            "optimized_metric: train/grad_norm" if line.startswith("optimized_metric:") else line
            for line in lines
        )
        + "\n"
    )
    for out_args in ((), ("--out", tmp_path / "out")):
        line = assert_one_line_error(report(sweep, *out_args))
        assert line == (
            f"error: the jobs of {str(sweep)!r} were optimized for different metrics "
            "(optimized_metric: val/loss in job 0; train/grad_norm in job 1), which one ranking "
            "cannot compare, and lmtrain.report has no option to rank by one: report the jobs of "
            "each metric on their own (copy their job folders into a new folder and pass that)"
        )
        assert not any((sweep / name).exists() for name in REPORT_FILES)
    assert not (tmp_path / "out").exists()  # an --out folder was made, then left empty


def test_a_record_file_name_taken_by_a_folder_in_out_writes_nothing(
    sweep: Path, tmp_path: Path
) -> None:
    """`.lmtrain_report.json` a folder in --out: the three files were written, then the error;
    a later report refused them as not written by lmtrain.report."""
    out_dir = tmp_path / "o9"
    (out_dir / ".lmtrain_report.json").mkdir(parents=True)
    line = assert_one_line_error(report(sweep, "--out", out_dir))
    assert line == (
        f"error: '{out_dir / '.lmtrain_report.json'}' is not a file that the report can replace: "
        "move it, or pass --out <another folder>"
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [".lmtrain_report.json"]
