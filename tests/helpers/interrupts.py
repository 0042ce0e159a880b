"""A Ctrl-C as a terminal sends it: SIGINT to a command's process group, once it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tests.helpers import ROOT

# Minutes on any CPU: the Ctrl-C must find job 0 still training (not ended, nor in job 1).
LONG_JOB = ("trainer.max_steps=100000", "trainer.val_check_interval=200", "logger=csv")


def trained(folder: Path) -> bool:
    """A run under `folder` has logged its first steps (its Startup line)."""
    logs = [p for p in folder.glob("**/*.log") if p.is_file()]
    return any("Startup:" in p.read_text(errors="replace") for p in logs)


def interrupt(
    command: list[str],
    ready: Callable[..., bool],
    whole_group: bool = True,
    settle: float = 0.0,
    ready_takes_pid: bool = False,
) -> tuple[int, str]:
    """Run `python -m lmtrain.train <command>`, send SIGINT once `ready()` (`ready(pid)` of the
    command's process with `ready_takes_pid`; and `settle` seconds more) to its whole process
    group, as a terminal does, or to its process alone, and return its exit code and stderr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtrain.train", *command],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and not (ready(proc.pid) if ready_takes_pid else ready()):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before the Ctrl-C"
        time.sleep(settle)
        if whole_group:
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


class CtrlCAtJobStart(Callback):
    """A Hydra callback that raises KeyboardInterrupt as job `num` of a sweep starts: a Ctrl-C
    that lands after Hydra took up the job and before its task, every time."""

    def __init__(self, num: int) -> None:
        self.num = num

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.job.num == self.num:
            raise KeyboardInterrupt


def wait_for_rank_one(rank0: psutil.Process, timeout: float) -> psutil.Process | None:
    """Rank 0's child that runs `lmtrain.train` (rank 1 of a `trainer=ddp_cpu` run), once it
    exists; None after `timeout` s. Rank 0 may start short-lived helpers too."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and rank0.is_running():
        for child in rank0.children():
            try:
                if "lmtrain.train" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:  # a short-lived helper that has already ended
                continue
        time.sleep(0.05)
    return None
