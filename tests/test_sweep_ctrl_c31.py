"""A Ctrl-C between two jobs of a basic-launcher sweep ends it as one in a job does (#31).

A Ctrl-C in a job's task recorded the job and the jobs left (`not run` rows in the report, the
command that runs them). One between two jobs, or as Hydra took up the next job, printed
`interrupted` and left the ledger with no end: the report said the sweep was still running or
killed, and named no job that did not run. Each test sends a real SIGINT to the sweep's own
process from a Hydra callback, with Python's own handler (a pytest-xdist worker, and so the
command it starts, ignores SIGINT).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from tests.helpers.cli import run_cli
from tests.helpers.sweep_signals import not_run_values, report, signal_sweep

SWEPT = "model.optimizer.lr=0.003,0.002,0.001"


def ctrl_c_sweep(tmp_path: Path, data_dir: Path, num: int, after: bool, *more: str) -> Any:
    return signal_sweep(tmp_path, data_dir, "SIGINT", num, after, *more)


def test_a_ctrl_c_between_two_jobs_records_the_jobs_left(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    out = ctrl_c_sweep(tmp_path, data_dir, 0, True, SWEPT)
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "KeyboardInterrupt" not in out.stderr, out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short after job 0 (interrupted): 2 job(s) did "
        "not run (job 1 (model.optimizer.lr=0.002); job 2 (model.optimizer.lr=0.001)): run "
        "them with python -m lmtrain.train -m "
    ), line
    assert line.endswith(f"hydra.sweep.dir={sweep}_rest"), line
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1").exists()
    assert not_run_values(sweep, "model.optimizer.lr") == [
        ["model.optimizer.lr=0.002"],
        ["model.optimizer.lr=0.001"],
    ]
    md = report(sweep)
    assert "3 jobs by val/loss (2 did not run: the sweep was cut short)" in md, md
    assert md.count("| not run |") == 2 and "no end recorded" not in md, md


def test_a_ctrl_c_as_a_job_starts_records_that_job_as_interrupted(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = ctrl_c_sweep(tmp_path, data_dir, 1, False, SWEPT)
    assert out.returncode == 130, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short at job 1 (interrupted): 1 job(s) did not "
        "run (job 2 (model.optimizer.lr=0.001)): run job 1 and them with python -m lmtrain.train"
    ), line
    job = json.loads((sweep / ".jobs" / "1.json").read_text())
    assert (job["ok"], job["why"]) == (False, "interrupted (Ctrl-C)"), job
    md = report(sweep)
    assert "(1 did not run: the sweep was cut short)" in md and "| interrupted |" in md, md


def test_the_rest_command_runs_the_jobs_left_and_the_report_points_to_it(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = ctrl_c_sweep(tmp_path, data_dir, 0, True, "model.optimizer.lr=0.003,0.002")
    assert out.returncode == 130, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    command = shlex.split(line.split("run them with python -m lmtrain.train ", 1)[1])
    command = [a for a in command if "hydra.callbacks.signal" not in a]  # this test's own
    rest = run_cli("train", *command)
    assert rest.returncode == 0, rest.stderr[-3000:]
    assert (tmp_path / "sweep_rest" / "0" / "metrics.json").is_file()
    md = report(sweep)  # the first sweep's report names where its jobs left went on
    assert f"The jobs left went on in {sweep}_rest" in md, md
