"""Lightning's SLURM auto-requeue (SIGUSR1: `hpc_ckpt_*.ckpt`, `scontrol requeue`), then the
job's preemption (SIGTERM: `last.ckpt`), then the requeued attempt, on a real training process.

There is no SLURM here: the job's variables are set as srun sets them for one task, and a
stand-in `scontrol` on PATH records the requeue Lightning asks for.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.slurm_jobs import SLURM_JOB, fake_scontrol


def restored_from(output: str) -> list[str]:
    """The checkpoints Lightning restored from, in order."""
    marker = "Restoring states from the checkpoint path at "
    return [line.split(marker)[1].strip() for line in output.splitlines() if marker in line]


@pytest.fixture(scope="module")
def preempted(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    """A job's first attempt: Lightning's auto-requeue saved hpc_ckpt_1.ckpt at step 3, then the
    preemption last.ckpt at step 5; and the metrics of the same run left uninterrupted."""
    tmp_path = tmp_path_factory.mktemp("auto_requeue")
    cli = tiny_cli(
        tmp_path, data_dir, "trainer.max_steps=8", "trainer.val_check_interval=4", "logger=csv"
    )
    reference = tmp_path / "reference"
    assert run_cli("train", *cli, f"hydra.run.dir={reference}").returncode == 0

    run = tmp_path / "run"
    signals = [
        "+callbacks.signals._target_=tests.helpers.faults.SlurmSignalsAtSteps",
        "+callbacks.signals.usr1_at=3",
        "+callbacks.signals.term_at=5",
    ]
    job = {**SLURM_JOB, **fake_scontrol(tmp_path)}
    first = run_cli("train", *cli, *signals, f"hydra.run.dir={run}", env=job)
    assert first.returncode == 128 + signal.SIGTERM, first.stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = torch.load(run / "hpc_ckpt_1.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert hpc["global_step"] == 3 and last["global_step"] > 3
    expected = json.loads((reference / "metrics.json").read_text())
    return {"cli": cli, "run": run, "job": job, "expected": expected}


def copy_of_the_first(preempted: dict, run: Path) -> Path:
    """The first attempt's folder, copied to `run` (each test changes its own copy)."""
    shutil.copytree(preempted["run"], run, symlinks=True)
    return run


def run_again(preempted: dict, run: Path, *overrides: str, requeued: bool = True) -> list[str]:
    """The job run again in `run`, as SLURM requeues it (SLURM_RESTART_COUNT=1) or, with
    `requeued=False`, as a new job; it must succeed. The checkpoints it restored from."""
    env = {**preempted["job"], **({"SLURM_RESTART_COUNT": "1"} if requeued else {})}
    result = run_cli("train", *preempted["cli"], f"hydra.run.dir={run}", *overrides, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return restored_from(result.stdout + result.stderr)


def ended_as_uninterrupted(preempted: dict, run: Path) -> bool:
    """Whether `run` ended at the uninterrupted run's step with its final val/loss."""
    ended, expected = json.loads((run / "metrics.json").read_text()), preempted["expected"]
    keys = ("trainer/global_step", "val/loss")
    return [ended[k] for k in keys] == [expected[k] for k in keys] and ended[keys[0]] == 8


def test_a_requeued_job_resumes_from_its_newest_save_and_validates_its_final_weights(
    preempted: dict, tmp_path: Path
) -> None:
    """The requeued attempt resumed from the auto-requeue's hpc_ckpt (step 3), not from the
    newer last.ckpt the preemption saved (step 5), and the validation after training loaded
    that hpc_ckpt again: metrics.json reported val/loss of the step-3 weights."""
    run = copy_of_the_first(preempted, tmp_path / "run")
    assert run_again(preempted, run) == [str(run / "checkpoints" / "last.ckpt")]
    assert ended_as_uninterrupted(preempted, run)  # the final weights, resumed exactly


def test_saves_written_in_the_same_second_rank_by_their_step(
    preempted: dict, tmp_path: Path
) -> None:
    """Equal times (coarse file-system times, a folder copied without them) ranked the saves by
    the order they were listed in: the step-3 hpc_ckpt was resumed from, steps 3-5 trained
    again, and the step-5 last.ckpt overwritten (red team rev_diff9)."""
    run = copy_of_the_first(preempted, tmp_path / "run")
    last = run / "checkpoints" / "last.ckpt"
    written = last.stat()
    os.utime(run / "hpc_ckpt_1.ckpt", ns=(written.st_atime_ns, written.st_mtime_ns))
    assert run_again(preempted, run) == [str(last)]
    assert ended_as_uninterrupted(preempted, run)


def test_a_new_job_with_overwrite_run_in_a_folder_of_hpc_saves_starts_its_own_run(
    preempted: dict, tmp_path: Path
) -> None:
    """`overwrite_run=true` in a folder holding hpc_ckpt files, not a requeue: the job resumed
    from the newest save and appended to the old run's logs (red team rev_diff9)."""
    run = copy_of_the_first(preempted, tmp_path / "run")
    assert run_again(preempted, run, "overwrite_run=true", requeued=False) == []
    assert ended_as_uninterrupted(preempted, run)  # trained from step 0, as the reference


def test_a_damaged_newest_save_gives_way_to_the_one_before(preempted: dict, tmp_path: Path) -> None:
    """A cut-short hpc_ckpt written after last.ckpt (a damaged disk) ended every requeue in
    the same error, with a good last.ckpt beside it (red team rev_diff9)."""
    run = copy_of_the_first(preempted, tmp_path / "run")
    hpc, last = run / "hpc_ckpt_1.ckpt", run / "checkpoints" / "last.ckpt"
    hpc.write_bytes(hpc.read_bytes()[:100_000])
    later = last.stat().st_mtime_ns + 60 * 10**9
    os.utime(hpc, ns=(later, later))
    assert run_again(preempted, run) == [str(last)]


def test_a_requeued_job_with_only_a_best_checkpoint_resumes_from_it(
    preempted: dict, tmp_path: Path
) -> None:
    """Killed between its first best-*.ckpt and its first last.ckpt (or with `save_last:
    false`): every requeued attempt failed, as a new run in a folder of another run's
    checkpoints (red team rev_diff9)."""
    run = copy_of_the_first(preempted, tmp_path / "run")
    (run / "hpc_ckpt_1.ckpt").unlink()
    (run / "checkpoints" / "last.ckpt").unlink()
    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    assert run_again(preempted, run) == [str(best)]
    assert ended_as_uninterrupted(preempted, run)
