"""Ctrl-C stops a whole sweep, as it stops a run: `interrupted`, exit 130 (`utils/task.py`).

Under the basic launcher a Ctrl-C in a job counted as that job's failure (red team rev_sweep25):
the next job started, it took one Ctrl-C per job, and a stored Optuna study kept each
interrupted trial as COMPLETE with +inf. Under `hydra/launcher=slurm_local` the launcher's wait
ended with submitit's traceback and exit 1. Each test interrupts a real sweep of long jobs once
its first job trains.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.helpers import ROOT
from tests.helpers.cli import tiny_cli

# A job long enough to be interrupted while it trains (minutes on any CPU: the signal must not
# find job 0 ended and land in job 1).
LONG_JOB = ("trainer.max_steps=100000", "trainer.val_check_interval=200", "logger=csv")


def interrupt_sweep(command: list[str], sweep: Path, whole_group: bool) -> tuple[int, str]:
    """Start `command`, send SIGINT once job 0 logs its first step (to the whole process group,
    as a terminal does, or to the sweep's process alone), and return its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtrain.train", *command],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            logs = [p for p in sweep.glob("**/*.log") if p.is_file()]
            if any("Startup:" in p.read_text(errors="replace") for p in logs):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the sweep ended before its first job trained"
        time.sleep(1.0)  # in the training steps
        if whole_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


def test_ctrl_c_stops_an_optuna_sweep_and_stores_no_result(tmp_path: Path, data_dir: Path) -> None:
    sweep, db = tmp_path / "sweep", tmp_path / "study.db"
    storage = f"sqlite:///{db}"
    command = [
        "hparams_search=optuna",
        *tiny_cli(tmp_path, data_dir, *LONG_JOB),
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep}",
    ]
    code, err = interrupt_sweep(command, sweep, whole_group=False)
    assert code == 130, err[-3000:]
    assert "the sweep goes on" not in err and "Traceback" not in err, err[-3000:]
    lines = err.strip().splitlines()
    assert lines[-2] == "interrupted", err[-3000:]
    # Then what did not run, as after a preemption (test_ctrl_c_resume29.py).
    assert lines[-1].startswith(
        f"error: the sweep under {sweep} was cut short at job 0 (interrupted): 2 more trial(s)"
    ), lines[-1]
    # One Ctrl-C ended the sweep: trial 1 never started.
    assert not (sweep / "1").exists()
    study = optuna.load_study(study_name="train", storage=storage)
    # Not a result: the trial stays RUNNING, as a preempted one does.
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]


def test_ctrl_c_stops_a_slurm_local_sweep_with_exit_130(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hydra/launcher=slurm_local",
        *tiny_cli(tmp_path, data_dir, *LONG_JOB),
        "model.optimizer.lr=2e-3,5e-4",
        f"hydra.sweep.dir={sweep}",
    ]
    code, err = interrupt_sweep(command, sweep, whole_group=True)
    assert code == 130, err[-3000:]
    assert "interrupted" in err.splitlines(), err[-3000:]
    # Not the launcher's traceback from submitit's wait. (Each job's submitit.local controller,
    # also reached by the Ctrl-C, still prints its own: submitit's code, started by submitit.)
    assert "submitit/core/core.py" not in err and "hydra_submitit_launcher" not in err, err[-3000:]
