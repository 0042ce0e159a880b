"""A rank that Lightning's launcher started ends when rank 0 does (`lmtrain.utils.parent_death`).

Before, rank 0 killed during start-up left rank 1 waiting at the rendezvous for torch's
30-minute timeout, holding its device. Real processes: a `trainer=ddp_cpu` run on two gloo ranks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import ROOT
from tests.helpers.cli import tiny_cli
from tests.helpers.interrupts import wait_for_rank_one

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def wait_for(condition, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("after_s", [0.5, 8.0])  # rank 1 importing; rank 1 at the rendezvous
def test_rank_one_ends_when_rank_zero_is_killed_during_start_up(
    tmp_path: Path, data_dir: Path, after_s: float
) -> None:
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2")
    command = [sys.executable, "-m", "lmtrain.train", *overrides, "trainer.max_steps=100000"]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    log = (tmp_path / "train.out").open("wb")
    rank0 = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    rank1: psutil.Process | None = None
    try:
        # Rank 1 is rank 0's child running the same module; rank 0 may start short-lived helpers.
        rank1 = wait_for_rank_one(psutil.Process(rank0.pid), 120)
        assert rank1 is not None and rank0.poll() is None, "no rank 1 started"
        time.sleep(after_s)
        os.kill(rank0.pid, signal.SIGKILL)  # no handler of rank 0 can stop its ranks
        rank0.wait(timeout=30)
        gone = wait_for(lambda: not rank1.is_running() or rank1.status() == "zombie", 60)
        assert gone, (tmp_path / "train.out").read_text()[-3000:]
    finally:
        # Only this run's processes: rank 1 (re-parented when rank 0 died, no child of this
        # process any more) and rank 0's. Not every child of this pytest process: one of them
        # may be the W&B service that later tests' runs connect to.
        with contextlib.suppress(ProcessLookupError):  # rank 0's process group, rank 1 in it
            os.killpg(rank0.pid, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            if rank1 is not None:
                rank1.kill()
        rank0.wait(timeout=30)
        log.close()
