"""A SLURM job from an sbatch script of one's own (no submitit) must name its run folder.

The default run folder is named by the time each process starts: every srun task made a folder
of its own, and the attempt SLURM requeued trained again from step 0 in a new folder, exit 0
(red team rev_dist22). Such a job is refused in one line before any folder is made, naming the
`hydra.run.dir=` to put in the script; with it, the requeued attempt resumes where the first
stopped. An allocation's variables without srun's (salloc) and sweeps are left alone.

There is no SLURM here: the job's variables are set as srun sets them.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from hydra.types import RunMode
from omegaconf import OmegaConf

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

JOB_ID = "7002"
SRUN_TASK = {
    "SLURM_JOB_ID": JOB_ID,
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "localhost",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}
TASKS = {
    "first attempt": (SRUN_TASK, ()),
    "requeued attempt": ({**SRUN_TASK, "SLURM_RESTART_COUNT": "1"}, ()),
    "second of two tasks": (
        {
            **SRUN_TASK,
            **{"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2"},
            **{"SLURM_PROCID": "1", "SLURM_LOCALID": "1"},
        },
        ("trainer=ddp_cpu", "trainer.strategy.timeout.seconds=3"),
    ),
}
# SIGTERM (SLURM's preemption) once step 3 has ended; no SIGUSR1 (step 100 is never reached).
PREEMPT_AT_3 = (
    "+callbacks.signals._target_=tests.helpers.faults.SlurmSignalsAtSteps",
    "+callbacks.signals.usr1_at=100",
    "+callbacks.signals.term_at=3",
)


def refusal(tmp_path: Path, data_dir: Path, env: dict[str, str], *overrides: str) -> str:
    """The one error line of a SLURM task refused before it made a run folder."""
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=8", "logger=csv", *overrides)
    result = run_cli("train", *cli, env=env, timeout=120)
    line = assert_one_line_error(result, "hydra.run.dir=", "/runs/$SLURM_JOB_ID", "requeue")
    assert result.returncode == 1, result.stderr[-2000:]
    assert not (tmp_path / "logs").exists(), sorted((tmp_path / "logs").rglob("*"))
    return line


@pytest.mark.parametrize("task", sorted(TASKS))
def test_a_slurm_task_without_a_named_run_folder_is_refused_before_making_one(
    tmp_path: Path, data_dir: Path, task: str
) -> None:
    env, overrides = TASKS[task]
    line = refusal(tmp_path, data_dir, env, *overrides)
    assert f"SLURM_JOB_ID={JOB_ID}" in line and str(tmp_path / "logs") in line, line


def test_the_folder_the_refusal_names_is_the_one_the_requeued_attempt_resumes_in(
    tmp_path: Path, data_dir: Path
) -> None:
    line = refusal(tmp_path, data_dir, SRUN_TASK)
    named = line.split("pass hydra.run.dir=")[1].split()[0].replace("$SLURM_JOB_ID", JOB_ID)
    cli = [
        *tiny_cli(tmp_path, data_dir, "trainer.max_steps=8", "logger=csv"),
        f"hydra.run.dir={named}",
    ]
    first = run_cli("train", *cli, *PREEMPT_AT_3, env=SRUN_TASK, timeout=300)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    run = Path(named)
    assert (run / "checkpoints" / "last.ckpt").is_file()

    requeued = {**SRUN_TASK, "SLURM_RESTART_COUNT": "1"}
    again = run_cli("train", *cli, *PREEMPT_AT_3, env=requeued, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    output = again.stdout + again.stderr
    assert f"Restoring states from the checkpoint path at {run / 'checkpoints'}" in output
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 8
    assert [p.name for p in run.parent.iterdir()] == [JOB_ID]  # no second folder


def test_an_allocation_without_srun_trains_in_a_folder_of_its_own(
    tmp_path: Path, data_dir: Path
) -> None:
    """salloc sets the job's variables but not a task's (SLURM_PROCID, ...); its job name
    `interactive` (or `bash`) tells Lightning that this is no SLURM job: a plain run."""
    salloc = {"SLURM_JOB_ID": JOB_ID, "SLURM_NTASKS": "1", "SLURM_NNODES": "1"}
    env = {**salloc, "SLURM_JOB_NAME": "interactive"}
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    result = run_cli("train", *cli, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((tmp_path / "logs").glob("*/runs/*/metrics.json"))) == 1


@pytest.mark.parametrize(
    ("mode", "folder", "refused"),
    [
        (RunMode.RUN, "${paths.log_dir}/runs/${now:%H-%M-%S_%f}", True),
        (RunMode.RUN, "/shared/runs/" + JOB_ID, False),  # named: every task, every attempt
        (RunMode.RUN, "${paths.log_dir}/runs/${oc.env:SLURM_JOB_ID}", False),
        (RunMode.RUN, "runs/${oc.env:SLURM_JOB_ID,${now:%H-%M-%S_%f}}", False),  # a local config's
        (RunMode.MULTIRUN, "${paths.log_dir}/runs/${now:%H-%M-%S_%f}", False),  # submitit's
    ],
)
def test_only_a_run_folder_named_by_the_time_is_refused(
    monkeypatch: pytest.MonkeyPatch, mode: RunMode, folder: str, refused: bool
) -> None:
    from lmtrain.utils.launch_env import launch_problem

    for name in list(os.environ):
        if name.startswith(("SLURM_", "MASTER_", "TORCHELASTIC_")) or name.endswith("RANK"):
            monkeypatch.delenv(name)
    for name, value in SRUN_TASK.items():
        monkeypatch.setenv(name, value)
    cfg = OmegaConf.create(
        {
            "paths": {"log_dir": "logs"},
            "task_name": "train",
            "trainer": {"num_nodes": 1, "devices": 1},
            "hydra": {"mode": mode, "run": {"dir": folder}},
        }
    )
    problem = launch_problem(cfg)
    assert (problem is not None) == refused, problem
    if refused:
        assert "pass hydra.run.dir=logs/train/runs/$SLURM_JOB_ID in the sbatch script" in problem
