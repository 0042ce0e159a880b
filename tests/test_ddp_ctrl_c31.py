"""A terminal's Ctrl-C while a `trainer=ddp_cpu` run starts its ranks ends it as one in training
does: `interrupted`, once, exit 130 (#31).

Lightning's launcher (rank 0) starts rank 1 and a thread that kills every process when a rank
dies. A Ctrl-C that found rank 1 importing ended it with 130 (its own `interrupted` line), while
rank 0, waiting for it at the rendezvous, could not act on its own SIGINT: the thread killed it,
exit -9 (137 in a shell, which reads as out-of-memory), with Lightning's zombie line; in a
sweep's job it was left waiting at the rendezvous for torch's timeout.
Real processes: two gloo ranks, SIGINT to their process group as a terminal sends it.
"""

from __future__ import annotations

import json
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


def rank_one_started(rank0: psutil.Process, timeout: float) -> bool:
    """Whether rank 0 started a child that runs `lmtrain.train` (rank 1) within `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and rank0.is_running():
        for child in rank0.children():
            try:
                if "lmtrain.train" in child.cmdline():
                    return True
            except psutil.NoSuchProcess:  # a short-lived helper that has already ended
                continue
        time.sleep(0.05)
    return False


def ctrl_c_as_rank_one_starts(command: list[str]) -> tuple[int, str]:
    """Run `command`, send SIGINT to its process group as soon as rank 1 exists, and return
    its exit code and stderr."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # As from a terminal: a pytest-xdist worker ignores SIGINT, and its children inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert rank_one_started(psutil.Process(proc.pid), 180), "rank 1 never started"
        time.sleep(0.5)  # rank 1 is importing torch and Lightning for seconds more
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")
def test_a_ctrl_c_as_rank_one_starts_is_one_line_and_exit_130(
    tmp_path: Path, data_dir: Path
) -> None:
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2", "logger=csv")
    command = [sys.executable, "-m", "lmtrain.train", *overrides, "trainer.max_steps=100000"]
    code, err = ctrl_c_as_rank_one_starts(command)
    assert code == 130, err[-3000:]
    assert err.count("interrupted") == 1 and err.strip().splitlines()[-1] == "interrupted", err
    assert "zombies" not in err and "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")
def test_a_ctrl_c_as_a_sweep_jobs_rank_one_starts_ends_the_sweep(
    tmp_path: Path, data_dir: Path
) -> None:
    # The sweep's process, held at the rendezvous, waited there for torch's 30-minute timeout.
    sweep = tmp_path / "sweep"
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2", "logger=csv")
    swept = ["model.optimizer.lr=0.002,0.001", f"hydra.sweep.dir={sweep}"]
    command = [sys.executable, "-m", "lmtrain.train", "-m", *overrides, *swept]
    code, err = ctrl_c_as_rank_one_starts([*command, "trainer.max_steps=100000"])
    assert code == 130, err[-3000:]
    assert "zombies" not in err and "Traceback" not in err, err[-3000:]
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: the sweep under {sweep} was cut short at job 0 (interrupted): 1 job(s) did not "
            "run (job 1 (model.optimizer.lr=0.001)): run job 0 and them with python -m lmtrain.train"
        )
    ), err[-3000:]
    job = json.loads((sweep / ".jobs" / "0.json").read_text())
    assert (job["ok"], job["why"]) == (False, "interrupted (Ctrl-C)"), job
