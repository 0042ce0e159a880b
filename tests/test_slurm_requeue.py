"""A SLURM time limit (submitit's SIGUSR2) mid-step: every rank saves, the job is requeued, resumes,
and the sweep records its real metric.

There is no SLURM here: the jobs run through the submitit launcher with its local executor
(`hydra/launcher=slurm_local`), whose requeue (exit code 144, then the controller runs the
job again) goes through the same submitit handler as `scontrol requeue` on a cluster.
"""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import optuna
import pytest
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer

from tests.helpers.cli import run_cli, tiny_cli


class SignalOnce(Callback):
    """Job `signal_job` of a sweep, in its first attempt (not resumed), sends `signal_name` to its
    own process in the middle of optimizer step `at_step` (after backward, before the optimizer
    step), as SLURM's warning before the time limit would."""

    def __init__(self, at_step: int, signal_name: str, job: int, signal_job: int) -> None:
        self.at_step = at_step
        self.signum = signal.Signals[signal_name]
        self.fire = job == signal_job

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        if self.fire and trainer.ckpt_path is None and trainer.global_step == self.at_step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGUSR2", "SIGTERM"])
def test_time_limit_signal_saves_requeues_and_the_sweep_records_the_real_metric(
    tmp_path: Path, data_dir: Path, signal_name: str
) -> None:
    sweep, storage = tmp_path / "sweep", f"sqlite:///{tmp_path / 'study.db'}"
    out = run_cli(
        "train",
        "hparams_search=optuna",
        "hydra/launcher=slurm_local",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage={storage}",
        # Two trials at once, every searched parameter fixed: job 1 is job 0 never stopped.
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "model.optimizer.lr=1e-3",
        "model.scheduler.num_warmup_steps=0",
        "model.optimizer.weight_decay=0.0",
        "model.config.n_embd=32",
        *tiny_cli(tmp_path, data_dir),
        "+callbacks.signal_once._target_=tests.test_slurm_requeue.SignalOnce",
        "+callbacks.signal_once.at_step=2",
        f"+callbacks.signal_once.signal_name={signal_name}",
        "+callbacks.signal_once.job=${hydra:job.num}",
        "+callbacks.signal_once.signal_job=0",
    )
    assert out.returncode == 0, out.stderr[-3000:]

    # Job 0 stopped after the step in flight (3), saved, was requeued once and resumed.
    job_log = (sweep / "0" / "train.log").read_text()
    assert f"Preempted by {signal_name} at step 3" in job_log, job_log[-3000:]
    logs = [p.read_text() for p in (sweep / ".submitit").glob("*/*_0_log.out")]
    attempts = sorted(log.count("Starting with JobEnvironment") for log in logs)
    assert attempts == [1, 2], attempts  # job 1 ran once, job 0 twice
    assert "Requeued SLURM job: resuming from" in job_log

    # Both jobs trained 4 steps to the same weights: the sweep records that val/loss, not +inf.
    metrics = [json.loads((sweep / str(j) / "metrics.json").read_text()) for j in (0, 1)]
    assert [m["trainer/global_step"] for m in metrics] == [4.0, 4.0]
    assert metrics[0]["val/loss"] == metrics[1]["val/loss"]
    study = optuna.load_study(study_name="train", storage=storage)
    values = {t.number: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert values == {0: metrics[0]["val/loss"], 1: metrics[1]["val/loss"]}
    assert all(math.isfinite(v) for v in values.values())
