"""The SLURM launcher: its sbatch script, and a job that is preempted, requeued and resumes.

There is no SLURM here. The sbatch script is rendered by submitit's own SLURM executor from
`hydra/launcher=slurm` (a stand-in `srun` on PATH lets it start). The job runs through the
same submitit launcher with the local executor (`hydra/launcher=slurm_local`); it is
"preempted" by the `Preempt` callback, then its pickled submission is run again with
SLURM_RESTART_COUNT=1, which is what SLURM does when it requeues a job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import submitit
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import OmegaConf

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_sweep


def test_slurm_launcher_asks_sbatch_for_one_task_per_device(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_cfg(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=600",
    )
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    params = launcher.params
    assert type(launcher).__name__ == "SlurmLauncher"
    assert (params["tasks_per_node"], params["nodes"], params["gpus_per_node"]) == (4, 2, 4)

    # The launcher's own translation to submitit (BaseSubmititLauncher.launch), rendered by
    # submitit's SLURM executor into the script sbatch would get.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(
        folder=tmp_path / "submitit", cluster="slurm", slurm_max_num_timeout=3
    )
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys}
    )
    script = executor._executor._make_submission_file_text("python -m lmtrain.train", "x")
    for line in (
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --nodes=2",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=600",
        "#SBATCH --job-name=train",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, script


@pytest.mark.parametrize("sweep", ["trainer.devices=2,4", "trainer.num_nodes=1,2"])
def test_a_sweep_over_job_sizes_under_the_slurm_launcher_is_refused(
    tmp_path: Path, data_dir: Path, sweep: str
) -> None:
    """hydra-submitit-launcher resolves hydra.launcher once, with the sweep's config: the
    4-device job was submitted with --ntasks-per-node=2 (red team rev_sweep). Refused before
    anything is submitted (a stand-in sbatch would record a submission)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text(f"#!/bin/sh\ntouch {tmp_path}/{tool}-ran\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    out = run_sweep(
        tmp_path,
        data_dir,
        tmp_path / "sweep",
        "trainer=ddp_cpu",
        sweep,
        launcher="slurm",
        tiny=(),
        env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    line = assert_one_line_error(out, f"so a sweep over {sweep.split('=')[0]} would run each job")
    assert line.endswith(
        "start one sweep per size instead (e.g. trainer.devices=4 -m <the other keys>)"
    )
    assert not (tmp_path / "sbatch-ran").exists()


class Preempt(Callback):
    """Stops the first attempt of a job after `at_step` steps, as a preemption would; a requeued
    attempt (SLURM_RESTART_COUNT > 0) runs through."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *_) -> None:
        first_attempt = int(os.environ.get("SLURM_RESTART_COUNT", "0")) == 0
        if first_attempt and trainer.global_step == self.at_step:
            raise RuntimeError(f"preempted at step {self.at_step}")


@pytest.mark.slow
def test_requeued_job_resumes_from_last_ckpt_in_the_same_wandb_run(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    # last.ckpt is written at the validation after step 2; preempted during step 3.
    preempt = [
        "+callbacks.preempt._target_=tests.test_slurm.Preempt",
        "+callbacks.preempt.at_step=2",
    ]
    out = run_sweep(tmp_path, data_dir, sweep, *preempt, launcher="slurm_local", tiny=())
    # The sweep ends with its job failed (SLURM's requeue is played by hand below): exit 1.
    assert out.returncode == 1, out.stderr[-3000:]
    assert "error: 1 of 1 jobs of the sweep under" in out.stderr
    assert "failed (job 0 in 0: RuntimeError: preempted at step 2)" in out.stderr
    job = sweep / "0"
    # The job's folder under .submitit/ holds its pickled submission, as sbatch would run it.
    (pickled,) = (sweep / ".submitit").glob("*/*_submitted.pkl")
    job_id = pickled.parent.name
    assert "preempted at step 2" in (job / "train.log").read_text()
    assert not (job / "metrics.json").exists()
    run_id = (job / "wandb_run_id").read_text().strip()

    # SLURM requeues: the same submission runs again, now with SLURM_RESTART_COUNT=1.
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "SLURM_RESTART_COUNT": "1",
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_JOB_ID": job_id,
        "SUBMITIT_LOCAL_NTASKS": "1",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1",
        "SUBMITIT_LOCAL_NODEID": "0",
        "SUBMITIT_LOCAL_GLOBALID": "0",
        "SUBMITIT_LOCAL_LOCALID": "0",
    }
    folder = str(sweep / ".submitit" / "%j")
    requeued = subprocess.run(
        [sys.executable, "-u", "-m", "submitit.core._submit", folder],
        cwd=ROOT,  # where the launcher ran, as the local executor does
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    log = (job / "train.log").read_text()
    assert "Requeued SLURM job: resuming from" in log
    assert "Restoring states from the checkpoint path" in requeued.stdout + requeued.stderr
    assert json.loads((job / "metrics.json").read_text())["trainer/global_step"] == 4

    # Both attempts logged to one W&B run: two offline logs of the same run id.
    runs = sorted((job / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)
    assert (job / "wandb_run_id").read_text().strip() == run_id
