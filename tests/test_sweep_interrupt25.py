"""Ctrl-C stops a whole sweep, as it stops a run: `interrupted`, exit 130 (`utils/task.py`).

Under the basic launcher a Ctrl-C in a job counted as that job's failure (red team rev_sweep25):
the next job started, it took one Ctrl-C per job, and a stored Optuna study kept each
interrupted trial as COMPLETE with +inf. Under `hydra/launcher=slurm_local` the launcher's wait
ended with submitit's traceback and exit 1. Each test interrupts a real sweep of long jobs once
its first job trains.
"""

from __future__ import annotations

from pathlib import Path

import optuna

from tests.helpers.cli import tiny_cli
from tests.helpers.interrupts import LONG_JOB, interrupt, trained


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
    code, err = interrupt(command, lambda: trained(sweep), whole_group=False, settle=1.0)
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
    code, err = interrupt(command, lambda: trained(sweep), settle=1.0)
    assert code == 130, err[-3000:]
    assert "interrupted" in err.splitlines(), err[-3000:]
    # Not the launcher's traceback from submitit's wait. (Each job's submitit.local controller,
    # also reached by the Ctrl-C, still prints its own: submitit's code, started by submitit.)
    assert "submitit/core/core.py" not in err and "hydra_submitit_launcher" not in err, err[-3000:]
