"""`lmtrain.report` of a folder that is no sweep's (red team docs29, 1).

`python -m lmtrain.report .` in a project, or `... logs/train/runs`, read every run below as a
job of one "sweep" (eval and export runs shown as failed) and replaced the user's own report.md
and report.csv there, as if the folder were a sweep's, whose three names are the report's own.
A sweep folder holds Hydra's multirun.yaml or lmtrain's ledger (.jobs/sweep.json); any other is
refused in one line, before anything is written.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, run_sweep, tiny_cli

pytestmark = pytest.mark.filterwarnings("ignore")

USERS_OWN = {"report.md": "# My results\nhand-written analysis\n", "report.csv": "a,b\n"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A project root holding one plain training run, where it is by default, and the user's
    own report.md and report.csv in the root and beside the run."""
    root = tmp_path_factory.mktemp("project")
    runs = root / "logs" / "train" / "runs"
    run = f"hydra.run.dir={runs / '2026-01-01_00-00-00'}"
    trained = run_cli("train", *tiny_cli(root, data_dir, "logger=csv", run))
    assert trained.returncode == 0, trained.stderr[-3000:]
    for folder in (root, runs):
        for name, text in USERS_OWN.items():
            (folder / name).write_text(text)
    return root


@pytest.mark.parametrize("where", [".", "logs/train/runs"])
def test_a_folder_of_plain_runs_is_refused_and_its_files_are_kept(
    project: Path, where: str
) -> None:
    folder = project / where
    result = run_cli("report", str(folder))
    assert_one_line_error(
        result,
        f"error: {str(folder)!r} is not a sweep folder (no multirun.yaml or .jobs/ there): "
        "pass one sweep's folder, e.g. logs/train/multiruns/<time>",
    )
    assert "wrote" not in result.stdout, result.stdout
    for name, text in USERS_OWN.items():
        assert (folder / name).read_text() == text
    assert not (folder / "val_curves.png").exists()
    assert not (folder / ".lmtrain_report.json").exists()


def test_a_real_sweep_is_still_reported_and_a_folder_of_sweeps_still_named(
    tmp_path: Path, data_dir: Path
) -> None:
    """A sweep of the basic sweeper is a sweep folder; the folder above it holds sweeps."""
    sweeps = tmp_path / "logs" / "train" / "multiruns"
    sweep = sweeps / "2026-01-01_00-00-00"
    made = run_sweep(tmp_path, data_dir, sweep, "model.optimizer.lr=1e-3")
    assert made.returncode == 0, made.stderr[-3000:]
    reported = run_cli("report", str(sweep))
    assert reported.returncode == 0, reported.stderr[-3000:]
    assert "1 jobs by val/loss" in (sweep / "report.md").read_text()
    above = run_cli("report", str(sweeps))
    assert_one_line_error(above, f"{str(sweeps)!r} holds sweeps (2026-01-01_00-00-00), not")
