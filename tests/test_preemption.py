"""Preemption: SIGTERM or SIGUSR1 to a real training process saves last.ckpt and exits non-zero.

The test starts `python -m lmtrain.train`, waits until `tests.helpers.faults.Pace` says training
is under way (it also slows the steps, so the run cannot end before the signal lands), sends the
signal from outside with `os.kill`, and checks the exit, the line, the checkpoint, the W&B run,
and that `ckpt_path=last` resumes and finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import tiny_cli, wandb_records, wandb_summary
from tests.helpers.killed_runs import (
    assert_same_run,
    csv_history,
    finish,
    resumable_corpus,
    start,
    train_command,
)

MAX_STEPS = 30


def start_train(*overrides: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, "-m", "lmtrain.train", *overrides]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_pid(path: Path, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"training never reached the paced steps:\n{proc.communicate()}")
        time.sleep(0.1)
    return int(path.read_text())


def interrupt(tmp_path: Path, data_dir: Path, sig: signal.Signals, *extra: str, rank: int = 0):
    """Train (paced after step 2), send `sig` to `rank`'s process; return the finished process
    (with its output) and the run folder."""
    run, pids = tmp_path / "run", tmp_path / "pids"
    cli = tiny_cli(
        tmp_path,
        data_dir,
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.val_check_interval=10",
        "callbacks.text_samples=null",
    )
    pace = ["+callbacks.pace._target_=tests.helpers.faults.Pace", f"+callbacks.pace.dirpath={pids}"]
    proc = start_train(*cli, f"hydra.run.dir={run}", *pace, *extra)
    os.kill(wait_for_pid(pids / f"rank{rank}.pid", proc), sig)
    stdout, stderr = proc.communicate(timeout=180)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), run, cli


def saved_step(run: Path) -> int:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"]


def test_sigterm_saves_exits_143_and_ckpt_path_last_resumes(tmp_path: Path, data_dir: Path) -> None:
    out, run, cli = interrupt(tmp_path, data_dir, signal.SIGTERM)
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    line = assert_one_line_error(out, "preempted by SIGTERM at step ", f"hydra.run.dir={run}")
    step = int(line.split(" at step ")[1].split(":")[0])
    assert 2 <= step < MAX_STEPS and saved_step(run) == step

    # Offline, W&B shows a failed run with the exit code; the preempting record is in its log.
    summary = wandb_summary(run)
    assert summary["state"] == "failed" and summary["exit_code"] == 143
    assert "preempting" in [record["type"] for record in wandb_records(run)]
    run_id = (run / "wandb_run_id").read_text().strip()

    resumed = subprocess.run(
        [sys.executable, "-m", "lmtrain.train", *cli, f"hydra.run.dir={run}", "ckpt_path=last"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == MAX_STEPS
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(s.name.endswith(run_id) for s in sessions)


def test_sigusr1_saves_and_exits_138(tmp_path: Path, data_dir: Path) -> None:
    out, run, _ = interrupt(tmp_path, data_dir, signal.SIGUSR1, "logger=none")
    assert out.returncode == 128 + signal.SIGUSR1, out.stderr[-3000:]
    line = assert_one_line_error(out, "preempted by SIGUSR1 at step ")
    assert saved_step(run) == int(line.split(" at step ")[1].split(":")[0])


@pytest.mark.slow
def test_ddp_signal_to_one_rank_stops_both_at_the_same_step(tmp_path: Path, data_dir: Path) -> None:
    out, run, _ = interrupt(
        tmp_path, data_dir, signal.SIGUSR1, "trainer=ddp_cpu", "logger=none", rank=1
    )
    # Every rank exits as the signalled one does (128 + SIGUSR1), not with SIGTERM's 143.
    assert out.returncode == 128 + signal.SIGUSR1, out.stderr[-3000:]
    # Rank 0 reports; it got no signal itself.
    line = assert_one_line_error(out, "preempted by SIGUSR1 on another rank at step ")
    assert saved_step(run) == int(line.split(" at step ")[1].split(":")[0])


@pytest.mark.slow
def test_preempted_and_resumed_run_logs_every_row_an_uninterrupted_one_does(
    tmp_path: Path, data_dir: Path
) -> None:
    """A row per step (log_every_n_steps=1), so the step saved at the preemption has one: the
    preempted run must log it before it stops, since the resume starts at the next step."""
    corpus = resumable_corpus(tmp_path)
    every_step, pids = "trainer.log_every_n_steps=1", tmp_path / "pids"
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    finish(train_command(corpus, data_dir, reference, every_step), log)
    command = train_command(corpus, data_dir, run, every_step)
    pace = ["+callbacks.pace._target_=tests.helpers.faults.Pace", f"+callbacks.pace.dirpath={pids}"]
    proc = start([*command, *pace], log)
    os.kill(wait_for_pid(pids / "rank0.pid", proc), signal.SIGUSR1)
    assert proc.wait(timeout=300) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    # Its training row is logged at step - 1 (Lightning counts logged steps from 0).
    step = saved_step(run)
    assert "train/loss" in csv_history(run).get(step - 1, {}), f"step {step}'s row is missing"
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run, reference)  # metrics.json, weights and every CSV row


@pytest.mark.slow
def test_preemption_at_a_step_a_validation_follows_runs_it_on_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    """The preemption stops before the validation due after its step (to stop within the
    cluster's notice); the resumed run runs that validation first, so its CSV row, text samples,
    the best checkpoint and the final weights are those of an uninterrupted run."""
    corpus = resumable_corpus(tmp_path)
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    # The first validation after a step (RESUMABLE_RUN's 15 puts it inside one, where no step
    # is taken to stop before) and inside an epoch (epochs of 8 micro-batches).
    every = "trainer.val_check_interval=14"
    finish(train_command(corpus, data_dir, reference, every), log)
    signal_it = "+callbacks.signal._target_=tests.helpers.faults.SignalBeforeValidation"
    proc = start([*train_command(corpus, data_dir, run, every), signal_it], log)
    assert proc.wait(timeout=300) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    step = saved_step(run)
    assert step < 57 and not any("val/loss" in row for row in csv_history(run).values())
    finish([*train_command(corpus, data_dir, run, every), "ckpt_path=last"], log)
    validated = [s for s, row in csv_history(run).items() if "val/loss" in row]
    # Lightning labels a validation's row with the number of steps logged before its own.
    assert validated and validated[0] == step - 1, (step, validated)
    assert_same_run(run, reference)  # metrics.json, weights and every CSV row
    assert "optimizer or schedule settings" not in log.read_text()  # the same config
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert best == sorted(p.name for p in (reference / "checkpoints").glob("best-*.ckpt"))


@pytest.mark.parametrize("name", ["SIGKILL", "SIGSTOP"])
def test_a_signal_no_process_can_catch_is_refused_in_one_line(name: str) -> None:
    """Its handler failed to install once training had started: an OSError traceback."""
    from lmtrain.callbacks.preemption import PreemptionCheckpoint
    from lmtrain.errors import LMTrainError

    with pytest.raises(LMTrainError) as err:
        PreemptionCheckpoint(signals=["SIGTERM", name])
    assert str(err.value).startswith(
        f"callbacks.preemption.signals has {name}, which no process can catch: use signals"
    )
