"""`logger.csv.version=null` (Lightning's default) split a resumed run's CSV history in two
(red team log31): Lightning's CSVLogger numbered a new `csv/version_<n>/` at each start, so the
resume wrote `version_1/metrics.csv` holding only its own steps beside the killed run's
`version_0/`, exit 0 and no warning, where docs/runs.md promises one `csv/metrics.csv` holding
the whole run. A null (or missing) version is now refused in one line before any work; the line's
fix, a fixed version, keeps one file across a resume.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli

REFUSAL = "logger.csv.version=null gives every start of the run a new csv/version_<n>/ folder"
HINT = "pass a fixed name, logger.csv.version=v1"
SKIP = (".lock", "train.log")  # the folder's lock holder, and the log that records the refusal


def trained_steps(metrics_csv: Path) -> list[int]:
    """The steps of the file's training-loss rows, in file order."""
    with metrics_csv.open() as f:
        return [int(row["step"]) for row in csv.DictReader(f) if row["train/loss"]]


@pytest.mark.parametrize("setting", ["logger.csv.version=null", "~logger.csv.version"])
def test_a_csv_logger_without_a_version_is_refused_in_one_line_before_any_work(
    tmp_path: Path, setting: str
) -> None:
    run, data = tmp_path / "run", tmp_path / "data"
    out = run_cli("train", *tiny_cli(tmp_path, data, "logger=csv", setting, f"hydra.run.dir={run}"))
    assert_one_line_error(out, REFUSAL, HINT)
    assert not run.exists()  # no run folder, no checkpoint, no CSV folder
    assert not data.exists()  # refused before data preparation


def test_a_run_saved_with_a_null_version_is_refused_on_resume_and_goes_on_in_one_file(
    tmp_path: Path, data_dir: Path
) -> None:
    """A run folder from before the refusal (its saved config says `version: null`): a plain
    `resume=` is refused and changes nothing; the line's fix continues its `version_0/`."""
    run = tmp_path / "run"
    first = tiny_cli(tmp_path, data_dir, "logger=csv", "logger.csv.version=0")
    out = run_cli("train", *first, f"hydra.run.dir={run}")  # 4 steps; stopped with a last.ckpt
    assert out.returncode == 0, out.stderr[-3000:]
    for name in ("config.yaml", "overrides.yaml"):  # as such a run saved them
        record = run / ".hydra" / name
        text = record.read_text().replace("version: 0", "version: null")
        record.write_text(text.replace("version=0", "version=null"))
    before = tree_digest(run, skip=SKIP)

    refused = run_cli("train", f"resume={run}", "trainer.max_steps=8")
    assert_one_line_error(refused, REFUSAL)
    assert tree_digest(run, skip=SKIP) == before

    resumed = run_cli(
        "train", f"resume={run}", "trainer.max_steps=8", "logger=csv", "logger.csv.version=0"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (run / "csv").iterdir()] == ["version_0"]
    assert trained_steps(run / "csv" / "version_0" / "metrics.csv") == list(range(8))
