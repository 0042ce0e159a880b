"""A SIGTERM anywhere in a basic-launcher sweep ends it as a preemption in a job does (#30).

Only a SIGTERM in a job's training was a preemption (the job recorded, the jobs left named with
the command that runs them, `not run` rows in the report). One between two jobs, or in a job
before its training, killed the sweep with 143 and no line, its ledger recorded nothing, and the
report showed a cut-short sweep as complete (red team r_sig30). Each test sends a real SIGTERM
to the sweep's own process from a Hydra callback, at a chosen point between or in its jobs.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback as LightningCallback
from lightning.pytorch import LightningModule, Trainer

from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.sweep_signals import ledger, not_run_values, report, signal_sweep

SWEPT = "model.optimizer.lr=0.003,0.002,0.001"


def sigterm_sweep(tmp_path: Path, data_dir: Path, num: int, after: bool, *more: str) -> Any:
    return signal_sweep(tmp_path, data_dir, "SIGTERM", num, after, *more)


def not_run_rates(sweep: Path) -> list[list[str]]:
    return not_run_values(sweep, "model.optimizer.lr")


def test_a_sigterm_between_two_jobs_ends_the_sweep_with_its_rest(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = sigterm_sweep(tmp_path, data_dir, 0, True, SWEPT)
    assert out.returncode == 143, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short after job 0 (terminated by SIGTERM): "
        "2 job(s) did not run (job 1 (model.optimizer.lr=0.002); job 2 (model.optimizer.lr="
        "0.001)): run them with python -m lmtrain.train -m "
    ), line
    assert " model.optimizer.lr=0.002,0.001 " in line and line.endswith(
        f"hydra.sweep.dir={sweep}_rest"
    ), line
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1").exists()
    assert not_run_rates(sweep) == [["model.optimizer.lr=0.002"], ["model.optimizer.lr=0.001"]]
    md = report(sweep)
    assert "3 jobs by val/loss (2 did not run: the sweep was cut short)" in md, md
    assert md.count("| not run |") == 2, md


def test_a_sigterm_as_a_job_starts_ends_the_sweep_with_that_job_to_run_again(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = sigterm_sweep(tmp_path, data_dir, 1, False, SWEPT)
    assert out.returncode == 143, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short at job 1 (terminated by SIGTERM): 1 job(s) "
        "did not run (job 2 (model.optimizer.lr=0.001)): run job 1 and them with python -m "
        "lmtrain.train -m "
    ), line
    assert " model.optimizer.lr=0.002,0.001 " in line, line
    assert not_run_rates(sweep) == [["model.optimizer.lr=0.001"]]
    job = json.loads((sweep / ".jobs" / "1.json").read_text())
    assert (job["ok"], job["why"]) == (False, "terminated by SIGTERM before it saved a checkpoint")
    md = report(sweep)
    assert "(1 did not run: the sweep was cut short)" in md and "| not run |" in md, md


def test_a_sigterm_between_optuna_trials_names_the_trials_left(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = sigterm_sweep(
        tmp_path, data_dir, 0, True, "hparams_search=optuna", "hydra.sweeper.n_trials=3"
    )
    assert out.returncode == 143, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short after job 0 (terminated by SIGTERM): 2 "
        "more trial(s) of the Optuna search did not run"
    ), line
    assert ledger(sweep)["trials_left"] == 2
    assert "(2 trials did not run: the search was cut short)" in report(sweep)


class SigtermAtFitEnd(LightningCallback):
    """Sends SIGTERM to this process at the end of job 0's `fit`, after its training steps (where
    the W&B export and the last save run): Lightning's handler only sets its flag there."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "sweep/0" in str(trainer.default_root_dir):
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_at_the_end_of_fit_ends_the_sweep_with_the_job_to_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    # Lightning's flag, set after the training steps, stops the final validation: the job is
    # resumed with resume=<its folder> (ckpt_path=last hydra.run.dir= would drop the sweep's
    # overrides), and the jobs left are named.
    sweep = tmp_path / "sweep"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    term = [f"+callbacks.term._target_={__name__}.SigtermAtFitEnd", SWEPT]
    out = run_cli("train", "-m", *cli, *term, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 143, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short at job 0 (terminated by SIGTERM; resume "
        f"with resume={sweep / '0'}): 2 job(s) did not run"
    ), line
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file() and not (sweep / "1").exists()
    assert not_run_rates(sweep) == [["model.optimizer.lr=0.002"], ["model.optimizer.lr=0.001"]]
