"""A job of a submitit sweep killed outright (SIGKILL, the OOM killer, scancel) leaves no result.

hydra-submitit-launcher collected the results in turn and raised submitit's
UncompletedJobError at the killed one: the sweep ended with a traceback while the other jobs
still trained, and SweepOutcome never judged it (red team). `hydra/launcher=slurm_local` runs the
same launcher as `slurm`, with submitit's local executor.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.utils.sweep_ledger import sweep_jobs
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_sweep

# submitit waits this long for a finished job's result file before it gives up on it.
SUBMITIT_RESULT_WAIT_S = 15


class KillOrOutlast(Callback):
    """At its first batch, the `kill` job leaves `marker` and SIGKILLs its own process (the
    submitit job's); the `outlast` job waits for that marker, then `linger_s` more, so that it
    is still training after the launcher has given up on the killed job's result."""

    def __init__(self, role: str, marker: str, linger_s: float) -> None:
        self.role, self.marker, self.linger_s = role, Path(marker), linger_s

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: object, batch_idx: int
    ) -> None:
        if trainer.global_step > 0:
            return
        if self.role == "kill":
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        deadline = time.monotonic() + 120
        while not self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(self.linger_s)


@pytest.mark.slow
def test_a_killed_job_fails_the_sweep_in_one_line_after_every_job_ran(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    life = [
        f"+callbacks.life._target_={__name__}.KillOrOutlast",
        "+callbacks.life.role=kill,outlast",  # job 0 is killed, job 1 outlasts it
        f"+callbacks.life.marker={tmp_path / 'killed'}",
        f"+callbacks.life.linger_s={SUBMITIT_RESULT_WAIT_S + 5}",
    ]
    out = run_sweep(tmp_path, data_dir, sweep, *life, launcher="slurm_local", timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert_one_line_error(
        out, f"error: 1 of 2 jobs of the sweep under {sweep} failed (0: no metrics.json (killed?))"
    )
    assert (tmp_path / "killed").exists()  # job 0 did die at its first step
    assert not (sweep / "0" / "metrics.json").exists()
    # The command waited for job 1, and the sweep ended with its ledger naming both jobs.
    metrics = json.loads((sweep / "1" / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 2
    assert sweep_jobs(sweep) == {"0", "1"}
    # train() arrived pickled from the launcher's process, whose import mark is not the job's.
    phases = {k: v for k, v in metrics.items() if k.startswith("time/startup/")}
    assert "time/startup/imports_s" not in phases and "time/startup/config_s" in phases, phases
    assert min(phases.values()) >= 0, phases
    assert sum(phases.values()) == pytest.approx(metrics["time/startup_s"], abs=1e-6)
