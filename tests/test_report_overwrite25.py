"""`lmtrain.report` of an `overwrite_run=true` sweep that was killed (red team rev_sweep25, 2).

Until a sweep ends, its ledger names no job folders, so the report trusted every folder: the
earlier sweep's job 1, which the new sweep never ran, was `ok`, and job 0, killed before its
first metrics.json, showed the earlier job's val/loss beside the new learning rate. A job counts
as successful only if this sweep wrote its metrics.json (docs/scaling.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmtrain import report
from lmtrain.utils.sweep_ledger import start_ledger
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, run_sweep

pytestmark = pytest.mark.filterwarnings("ignore")

# kill -9 of the sweep's own process (the basic launcher runs its jobs in it) after step 1.
KILL_AT_STEP_1 = (
    "+callbacks.kill._target_=tests.helpers.faults.KillAtStep",
    "+callbacks.kill.step=1",
)


def test_a_killed_overwrite_sweep_reports_none_of_the_earlier_sweeps_results(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    first = run_sweep(tmp_path, data_dir, sweep, "model.optimizer.lr=1e-3,3e-4")
    assert first.returncode == 0, first.stderr[-3000:]
    old_metrics = (sweep / "0" / "metrics.json").read_text()
    assert [job.status for job in report.read_jobs(sweep)] == ["ok", "ok"]

    killed = run_sweep(
        tmp_path,
        data_dir,
        sweep,
        "model.optimizer.lr=2e-3,5e-4",
        "overwrite_run=true",
        *KILL_AT_STEP_1,
    )
    assert killed.returncode != 0, killed.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").read_text() == old_metrics  # nothing deleted
    assert json.loads(old_metrics)["val/loss"] > 0

    # Job 0 ran (its new learning rate) and was killed: no result. Folder 1 is only the
    # earlier sweep's: this sweep never ran job 1 there.
    result = run_cli("report", str(sweep), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    (job,) = report.read_jobs(sweep)
    assert (job.num, job.status, job.metrics) == (0, "failed", {})
    assert job.overrides["model.optimizer.lr"] == "0.002"
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(f"{sweep / '0'}: its metrics.json is from the earlier sweep" in w for w in warnings)
    assert any(f"{sweep / '1'}: the earlier sweep" in w and "left out" in w for w in warnings)
    rows = (tmp_path / "out" / "report.csv").read_text().splitlines()
    assert len(rows) == 2 and ",failed," in rows[1], rows


def test_an_overwrite_sweep_killed_before_its_first_job_has_no_job_to_report(
    tmp_path: Path, data_dir: Path
) -> None:
    """Every folder is the earlier sweep's: one `error:` line, not that sweep's results."""
    sweep = tmp_path / "sweep"
    first = run_sweep(tmp_path, data_dir, sweep, "model.optimizer.lr=1e-3")
    assert first.returncode == 0, first.stderr[-3000:]
    start_ledger(sweep)  # a new sweep's start (SweepOutcome.claim), killed before its job 0
    result = run_cli("report", str(sweep))
    assert_one_line_error(
        result,
        f"no job to report in '{sweep}': the sweep last started there (overwrite_run=true) has "
        "not run a job yet",
    )
    assert not (sweep / "report.csv").exists()
