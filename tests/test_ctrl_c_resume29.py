"""A Ctrl-C says how to resume what the run saved, and a sweep's report shows it (#29).

The line was a bare `interrupted`, though the run's last.ckpt resumes as any other; a sweep's
report listed the interrupted job as `failed`, without its `resume=`, and left out the jobs the
Ctrl-C kept from running (a preemption's report has both: `utils/sweep_plan.py`). Each test
interrupts a real run, as a terminal does, once it has saved (or before it saved) a checkpoint.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.corpora import one_file_corpus
from tests.helpers.interrupts import LONG_JOB, interrupt, trained

SAVE_EVERY_STEP = "callbacks.model_checkpoint.every_n_train_steps=1"


def test_a_run_interrupted_after_a_save_says_how_to_resume_and_resumes(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *LONG_JOB, SAVE_EVERY_STEP)
    last = run / "checkpoints" / "last.ckpt"
    code, err = interrupt([*cli, f"hydra.run.dir={run}"], last.is_file)
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    resume = f"resume with ckpt_path=last hydra.run.dir={run}"
    assert line == f"interrupted: nothing was saved after the last checkpoint; {resume}", line
    # The command it names resumes the run (to a nearer end).
    out = run_cli("train", *cli, "trainer.max_steps=400", "ckpt_path=last", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Restoring states from the checkpoint" in out.stderr + out.stdout


def test_a_run_interrupted_before_its_first_save_names_no_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *LONG_JOB)  # last.ckpt after validations: none yet
    code, err = interrupt([*cli, f"hydra.run.dir={run}"], lambda: trained(run))
    assert code == 130, err[-3000:]
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert err.strip().splitlines()[-1] == "interrupted", err[-3000:]


def report_rows(sweep: Path) -> dict[str, str]:
    """job number -> status, from a report of `sweep` written by lmtrain.report."""
    out = run_cli("report", str(sweep))
    assert out.returncode == 0, out.stderr[-3000:]
    with (sweep / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {row["job"]: row["status"] for row in rows}


def test_a_sweep_interrupted_in_a_job_that_saved_reports_its_resume_and_the_jobs_left(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    lrs = "model.optimizer.lr=0.002,0.001,0.0005"
    cli = tiny_cli(tmp_path, data_dir, *LONG_JOB, SAVE_EVERY_STEP)
    command = ["-m", *cli, lrs, f"hydra.sweep.dir={sweep}"]
    code, err = interrupt(command, (sweep / "0" / "checkpoints" / "last.ckpt").is_file)
    assert code == 130, err[-3000:]
    lines = err.strip().splitlines()
    resume = f"resume with resume={sweep / '0'}"
    assert f"interrupted: nothing was saved after the last checkpoint; {resume}" in lines
    assert lines[-1].startswith(
        f"error: the sweep under {sweep} was cut short at job 0 (interrupted): 2 job(s) did not "
        "run (job 1 (model.optimizer.lr=0.001); job 2 (model.optimizer.lr=0.0005)): after resuming "
        "job 0, run them with python -m lmtrain.train -m "
    ), lines[-1]
    assert " model.optimizer.lr=0.001,0.0005 " in lines[-1], lines[-1]
    assert lines[-1].endswith(f"hydra.sweep.dir={sweep}_rest"), lines[-1]
    assert report_rows(sweep) == {"0": "interrupted", "1": "not run", "2": "not run"}
    report = (sweep / "report.md").read_text()
    assert f"Job 0 was interrupted (Ctrl-C): {resume}." in report, report
    assert "3 jobs by val/loss (2 did not run: the sweep was cut short)" in report, report


def test_a_sweep_interrupted_before_a_save_reruns_that_job_too(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    cli = tiny_cli(tmp_path, data_dir, *LONG_JOB)
    command = ["-m", *cli, "model.optimizer.lr=0.002,0.001", f"hydra.sweep.dir={sweep}"]
    code, err = interrupt(command, lambda: trained(sweep))
    assert code == 130, err[-3000:]
    lines = err.strip().splitlines()
    assert "interrupted" in lines, err[-3000:]
    assert lines[-1].startswith(
        f"error: the sweep under {sweep} was cut short at job 0 (interrupted): 1 job(s) did not "
        "run (job 1 (model.optimizer.lr=0.001)): run job 0 and them with python -m lmtrain.train "
        "-m "
    ), lines[-1]
    assert " model.optimizer.lr=0.002,0.001 " in lines[-1], lines[-1]
    assert report_rows(sweep) == {"0": "interrupted", "1": "not run"}
    report = (sweep / "report.md").read_text()
    assert "Job 0 was interrupted (Ctrl-C): it saved no checkpoint, so run it again." in report


def test_an_earlier_runs_last_ckpt_is_not_offered_as_this_runs(
    tmp_path: Path, data_dir: Path
) -> None:
    # Review: overwrite_run=true deletes nothing, so the folder still held the earlier run's
    # last.ckpt, and the line (and a sweep's ledger) told the user to go on with that run.
    corpus = one_file_corpus(tmp_path / "corpus")
    run = train_csv_run(tmp_path, data_dir, corpus, "run", "trainer.max_steps=2")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    before = startups(run)
    cli = tiny_cli(tmp_path, data_dir, *LONG_JOB, "overwrite_run=true", corpus=corpus)
    code, err = interrupt([*cli, f"hydra.run.dir={run}"], lambda: startups(run) > before)
    assert code == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted", err[-3000:]


def startups(run: Path) -> int:
    """How many runs in `run` have logged their first steps (their Startup lines)."""
    logs = [p for p in run.glob("*.log") if p.is_file()]
    return sum(p.read_text(errors="replace").count("Startup:") for p in logs)


def test_a_ctrl_c_as_the_next_job_starts_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    # rev_stop29: a Ctrl-C as Hydra started job 1 (naming it, before its task) went up through
    # Hydra as Python's KeyboardInterrupt traceback, with no line.
    sweep = tmp_path / "sweep"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    ctrl_c = [
        "+hydra.callbacks.ctrl_c._target_=tests.helpers.interrupts.CtrlCAtJobStart",
        "+hydra.callbacks.ctrl_c.num=1",
    ]
    sweep_args = ["model.optimizer.lr=0.002,0.001", f"hydra.sweep.dir={sweep}"]
    out = run_cli("train", "-m", *cli, *ctrl_c, *sweep_args)
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "KeyboardInterrupt" not in out.stderr, out.stderr
    line = out.stderr.strip().splitlines()[-1]  # job 1, the last, is to run again (#31)
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short at its last job, 1 (interrupted): run it "
        "again with python -m lmtrain.train -m "
    ), out.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file()  # job 0 ran, job 1 never started


def test_a_keyboard_interrupt_outside_the_task_is_one_line() -> None:
    code = "from lmtrain.utils.interrupt_exit import interrupt_is_one_line as one\n"
    code += "with one():\n    raise KeyboardInterrupt"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert (out.returncode, out.stderr) == (130, "interrupted\n"), out.stderr
