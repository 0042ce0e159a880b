"""A run killed with SIGKILL and resumed from its last checkpoint has every step in W&B.

wandb-core writes the offline run file (`run-*.wandb`) every `x_transaction_log_flush_interval`
seconds (W&B's default: 15), so the rows of those seconds died with the process; the resume
starts after its checkpoint, so the rows logged between W&B's last write and that checkpoint
were never logged again (the CSV and TensorBoard logs had every step). configs/logger/wandb.yaml
writes every second: rows logged more than about a second before a kill survive. W&B has no
public call that waits for that write, so a checkpoint save cannot wait for it.

The run is paced (tests.helpers.faults.Pace) to stall once its checkpoint is saved, killed a few
seconds later, resumed with `ckpt_path=last`, and both W&B sessions are read back with W&B's own
reader (`wandb leet inspect`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from tests.helpers import ROOT
from tests.helpers.cli import inspect_session, run_cli, tiny_cli
from tests.helpers.killed_runs import csv_history

MAX_STEPS = 8
SAVED_AT = 3  # callbacks.model_checkpoint.every_n_train_steps
KILL_AFTER_S = 3.0  # after the checkpoint: well over the 1 s between W&B's writes


def train_until_stalled(cli: list[str], pids: Path, log: Path) -> subprocess.Popen[bytes]:
    """`python -m lmtrain.train` stalled after step SAVED_AT + 1 (its checkpoint of step SAVED_AT
    saved a batch earlier), once `pids/rank0.pid` says it is there."""
    pace = [
        "+callbacks.pace._target_=tests.helpers.faults.Pace",
        f"+callbacks.pace.dirpath={pids}",
        f"+callbacks.pace.after_step={SAVED_AT + 1}",
        "+callbacks.pace.seconds=600",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmtrain.train", *cli, *pace],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 300
    while not (pids / "rank0.pid").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise AssertionError(f"training never stalled:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def wandb_loss_steps(session: Path) -> set[int]:
    """The steps (trainer/global_step) of the offline session's history rows with train/loss."""
    records = [json.loads(line) for line in inspect_session(session).splitlines()]
    items = [r["history"]["item"] for r in records if r.get("type") == "history"]
    return {int(item["trainer/global_step"]) for item in items if "train/loss" in item}


def test_a_run_killed_after_its_checkpoint_has_every_step_in_wandb_once_resumed(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path,
        data_dir,
        "logger=many",
        f"trainer.max_steps={MAX_STEPS}",
        f"callbacks.model_checkpoint.every_n_train_steps={SAVED_AT}",
        "trainer.val_check_interval=4",
        "callbacks.text_samples=null",
        f"hydra.run.dir={run}",
    )
    proc = train_until_stalled(cli, tmp_path / "pids", tmp_path / "killed.out")
    try:
        last = run / "checkpoints" / "last.ckpt"
        saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        assert saved == SAVED_AT
        time.sleep(KILL_AFTER_S)
    finally:
        proc.send_signal(signal.SIGKILL)  # the training process alone, as the OOM killer does
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    killed, again = sorted((run / "wandb").glob("offline-run-*"))
    before_kill = wandb_loss_steps(killed)
    assert set(range(SAVED_AT)) <= before_kill, before_kill  # W&B lost none it had before
    logged = before_kill | wandb_loss_steps(again)
    in_csv = {step for step, row in csv_history(run).items() if "train/loss" in row}
    assert logged == in_csv == set(range(MAX_STEPS)), (sorted(logged), sorted(in_csv))
