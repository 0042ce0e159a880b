"""A SIGTERM to a `hydra/launcher=slurm_local` sweep's command stops its jobs, as Ctrl-C does.

The launcher died at once with exit 143 and no line, while submitit requeued its jobs, which
trained on after the command returned and wrote `ok: true` into the sweep (red team rev_sig30).
Now each job saves as on a preemption and is not requeued, nothing of the sweep outlives its
command, and one line names the resume command of each job. The SIGTERM goes to the whole
process group (a scheduler, `timeout`) or to the command alone (`kill <pid>`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmtrain.utils.sweep_ledger import unended
from tests.helpers import ROOT
from tests.helpers.cli import command_environment, tiny_cli
from tests.helpers.interrupts import LONG_JOB


def training(sweep: Path, jobs: int) -> bool:
    """Each of the sweep's first `jobs` jobs has logged its first steps (its Startup line)."""
    logs = [sweep / str(num) / "train.log" for num in range(jobs)]
    return all(p.is_file() and "Startup:" in p.read_text(errors="replace") for p in logs)


@pytest.mark.parametrize("whole_group", [True, False], ids=["group", "command"])
def test_sigterm_stops_a_slurm_local_sweep_and_its_jobs(
    tmp_path: Path, data_dir: Path, whole_group: bool
) -> None:
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hydra/launcher=slurm_local",
        *tiny_cli(tmp_path, data_dir, *LONG_JOB),
        "model.optimizer.lr=2e-3,5e-4",
        f"hydra.sweep.dir={sweep}",
    ]
    log = tmp_path / "stderr.txt"  # not a pipe: a job left running would hold it open
    with log.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lmtrain.train", *command],
            cwd=ROOT,
            env=command_environment(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not training(sweep, 2):
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text()[-3000:]
        if whole_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=180)
        # Nothing of the sweep runs on once its command has returned (the jobs' controllers
        # and jobs are in its process group: start_new_session).
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the command, or jobs it left running
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    err = log.read_text()
    assert proc.returncode == 143, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: the sweep under {sweep} was stopped by SIGTERM: "), last
    for num in (0, 1):
        assert f"job {num}: python -m lmtrain.train resume={sweep / str(num)}" in last, last
        # Each job saved as on a preemption, and ran once: not requeued.
        assert (sweep / str(num) / "checkpoints" / "last.ckpt").is_file()
        assert not (sweep / str(num) / "metrics.json").exists()
    logs = [p.read_text() for p in (sweep / ".submitit").glob("*/*_0_log.out")]
    assert sorted(log.count("Starting with JobEnvironment") for log in logs) == [1, 1], logs
    assert not unended(sweep)  # its end is recorded: the report does not call it still running
