"""`tok/s` in metrics.json is a figure the process that wrote it measured (red team rev_docs17, L3).

A run resumed for fewer logged steps than the throughput window (4) measures no rate, yet its
metrics.json reported the earlier process's `tok/s`, restored from the checkpoint's last train
metrics (`TrainingTotals`): a figure of other steps, perhaps of other hardware, as its own. It is
left out now; a resumed process that fills a window reports its own.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli


def measured_rates(run_dir: Path) -> dict[int, float]:
    """Step -> the tokens/s the throughput monitor logged there (csv/metrics.csv)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    key = "train/device/items_per_sec"
    return {int(r["step"]): float(r[key]) for r in rows if r.get(key)}


def test_a_short_resume_reports_no_earlier_processes_tokens_per_second(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    command = [*tiny_cli(tmp_path, data_dir, "logger=csv"), f"hydra.run.dir={run_dir}"]
    first = run_cli("train", *command)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rates = measured_rates(run_dir)
    assert list(rates) == [3]  # the window of 4 logged steps filled at the last one
    assert metrics["tok/s"] == pytest.approx(rates[3])

    # 2 more steps: no window filled, nothing measured; the checkpoint's figure is not reported.
    short = run_cli("train", *command, "ckpt_path=last", "trainer.max_steps=6")
    assert short.returncode == 0, short.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 6 and "tok/s" not in metrics, metrics
    assert list(measured_rates(run_dir)) == [3]
    assert metrics["tokens_seen"] == 6 * 8 * 32  # the run's totals still go on

    # 4 more: this process fills a window and reports its own rate.
    longer = run_cli("train", *command, "ckpt_path=last", "trainer.max_steps=10")
    assert longer.returncode == 0, longer.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rates = measured_rates(run_dir)
    assert list(rates) == [3, 9]
    assert metrics["tok/s"] == pytest.approx(rates[9])
