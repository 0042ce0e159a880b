"""A SLURM job killed right after Lightning's auto-requeue save (SIGUSR1: `hpc_ckpt_1.ckpt`,
written by Lightning's signal handler in the middle of a training step), then requeued
(SLURM_RESTART_COUNT=1), on a real training process (red team fault24, finding 2).

Resumed from that `hpc_ckpt`, every later validation ran one batch early: other rows, another
best checkpoint, other samples. The requeued attempt must be the uninterrupted run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.killed_runs import csv_history, csv_rows
from tests.helpers.slurm_jobs import SLURM_JOB, fake_scontrol

RUN = ["trainer.max_steps=12", "trainer.val_check_interval=4", "logger=csv"]


class AutoRequeueThenKillInStep(Callback):
    """On a SLURM job's first attempt, inside training step `step` (its forward pass done, its
    backward pass and optimizer step to come): SIGUSR1, which Lightning's auto-requeue handler
    answers with `hpc_ckpt_1.ckpt` and `scontrol requeue`, then SIGKILL, as SLURM ends a job
    whose next save did not come in time."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_before_backward(self, trainer: Trainer, *_: Any) -> None:
        if (
            os.environ.get("SLURM_RESTART_COUNT", "0") == "0"
            and trainer.global_step + 1 == self.step
        ):
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler saves before the next line runs
            os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    """The run left uninterrupted (validations after steps 4, 8 and 12), and its overrides."""
    tmp_path = tmp_path_factory.mktemp("hpc_requeue24")
    cli = tiny_cli(tmp_path, data_dir, *RUN)
    run = tmp_path / "reference"
    result = run_cli("train", *cli, f"hydra.run.dir={run}", env=SLURM_JOB)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"cli": cli, "run": run}


def killed_then_requeued(reference: dict, tmp_path: Path, step: int) -> tuple[Path, str]:
    """The job's first attempt, killed inside step `step` after Lightning's hpc save; then its
    requeued attempt, which must succeed. The run folder and the requeued attempt's output."""
    run, job = tmp_path / "run", {**SLURM_JOB, **fake_scontrol(tmp_path)}
    killer = [
        "+callbacks.killer._target_=tests.test_hpc_requeue24.AutoRequeueThenKillInStep",
        f"+callbacks.killer.step={step}",
    ]
    first = run_cli("train", *reference["cli"], *killer, f"hydra.run.dir={run}", env=job)
    assert first.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), first.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", SLURM_JOB["SLURM_JOB_ID"]]
    saved = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    progress = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    assert saved["global_step"] == step - 1  # the weights of the step before, ...
    assert progress["started"] == step and progress["completed"] == step - 1  # ... mid-step
    env = {**job, "SLURM_RESTART_COUNT": "1"}
    again = run_cli("train", *reference["cli"], *killer, f"hydra.run.dir={run}", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    return run, again.stdout + again.stderr


def assert_as_uninterrupted(run: Path, reference: Path) -> None:
    """The same CSV rows (values as written), best checkpoint, final weights and samples."""
    assert csv_history(run) == csv_history(reference)
    assert csv_rows(run) == csv_rows(reference)
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (reference / "checkpoints").glob("best-*.ckpt"))
    weights = [
        torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for r in (run, reference)
    ]
    assert weights[0]["global_step"] == weights[1]["global_step"] == 12
    for name, tensor in weights[1]["state_dict"].items():
        assert torch.equal(weights[0]["state_dict"][name], tensor), name
    assert (run / "samples.txt").read_text() == (reference / "samples.txt").read_text()


def test_a_job_killed_after_a_mid_step_hpc_save_resumes_as_the_uninterrupted_run(
    reference: dict, tmp_path: Path
) -> None:
    """Killed inside step 7 (last.ckpt of step 4 beside the hpc save): resumed from the hpc
    save, the validations of steps 8 and 12 ran after steps 7 and 11 (red team fault24)."""
    run, output = killed_then_requeued(reference, tmp_path, step=7)
    assert_as_uninterrupted(run, reference["run"])
    assert "not resuming from hpc_ckpt_1.ckpt" in output
    last = run / "checkpoints" / "last.ckpt"
    assert f"Restoring states from the checkpoint path at {last}" in output


def test_a_job_killed_after_a_mid_step_hpc_save_before_any_other_save_starts_over(
    reference: dict, tmp_path: Path
) -> None:
    """Killed inside step 3, before the first last.ckpt: the hpc save is the only one, and the
    requeued attempt trains from step 0, as the uninterrupted run."""
    run, output = killed_then_requeued(reference, tmp_path, step=3)
    assert_as_uninterrupted(run, reference["run"])
    assert "Restoring states from the checkpoint path" not in output


class SaveAt(Callback):
    """Saves `path_mid` from inside step 2 (after its forward pass), as Lightning's SIGUSR1
    handler does when the signal lands there."""

    def __init__(self, path_mid: Path) -> None:
        self.path_mid = path_mid

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == 1:
            trainer.save_checkpoint(self.path_mid)


def test_lightning_checkpoints_tell_a_save_inside_a_training_batch(tmp_path: Path) -> None:
    """Lightning alone: the batch progress counters a save holds (`loops.fit_loop`), read by
    `saved_inside_training_batch`, show a batch under way inside a step, and none after fit."""
    from lmtrain.lightning_compat.hpc_checkpoint import saved_inside_training_batch

    trainer = Trainer(
        max_steps=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[SaveAt(tmp_path / "mid.ckpt")],
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    trainer.save_checkpoint(tmp_path / "after.ckpt")
    mid, after = (
        torch.load(tmp_path / name, map_location="cpu", weights_only=True)
        for name in ("mid.ckpt", "after.ckpt")
    )
    progress = mid["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    assert (progress["ready"], progress["started"], progress["completed"]) == (2, 2, 1)
    assert mid["global_step"] == 1  # the weights and optimizer of the step before
    assert saved_inside_training_batch(mid)
    assert not saved_inside_training_batch(after)
    assert not saved_inside_training_batch({"state_dict": {}})  # not Lightning's layout
