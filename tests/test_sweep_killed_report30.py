"""A sweep killed between two jobs (kill -9: no handler runs) recorded no end, and the report
showed it as a complete sweep of the jobs that ran (red team rev_sig30); it says so now."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.killed_runs import kill, start


@pytest.mark.slow
def test_the_report_of_a_sweep_killed_between_jobs_says_it_recorded_no_end(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    overrides = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.sweep.dir={sweep}")
    command = [sys.executable, "-m", "lmtrain.train", "-m", *overrides, "seed=1,2,3"]
    proc = start(command, tmp_path / "sweep.out")
    deadline = time.monotonic() + 300
    while not (sweep / "0" / "metrics.json").exists() and time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "sweep.out").read_text()[-3000:]
        time.sleep(0.05)
    kill(proc)
    report = run_cli("report", str(sweep))
    assert report.returncode == 0, report.stderr[-3000:]
    heading = (sweep / "report.md").read_text().splitlines()[0]
    assert "(no end recorded: still running, or its process was killed)" in heading, heading
