"""`lmtrain.report` finds a job's curve where its saved config put the loggers (red team log27).

A sweep with `logger.csv.version=v` wrote each job's `csv/v/metrics.csv`, and one with a
TensorBoard `name` other than `tensorboard` its events in `<name>/<job name>/`; the report read
only `csv/metrics.csv` and `tensorboard/`, said "no val/loss curve" and wrote no plot.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lmtrain.utils.sweep_curves import read_curve
from tests.helpers.cli import run_cli, run_sweep

pytestmark = pytest.mark.filterwarnings("ignore")

# Validations after steps 1 and 3 (0-based), then the final one on the whole split at 4.
LOGGERS = (
    "logger=[csv,tensorboard]",
    "trainer.max_steps=4",
    "logger.csv.version=v",
    "logger.tensorboard.name=tb",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A one-job sweep whose CSV logger writes `csv/v/` and TensorBoard `tb/<job name>/`."""
    tmp = tmp_path_factory.mktemp("curves27")
    folder = tmp / "sweep"
    out = run_sweep(tmp, data_dir, folder, "model.optimizer.lr=1e-3", tiny=LOGGERS)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (folder / "0" / "csv" / "v" / "metrics.csv").is_file()
    assert not (folder / "0" / "csv" / "metrics.csv").exists()
    assert not (folder / "0" / "tensorboard").exists()
    return folder


def final_val_loss(job: Path) -> float:
    return json.loads((job / "metrics.json").read_text())["val/loss"]


def steps(curve: list[tuple[float, float]]) -> list[float]:
    return [step for step, _ in curve]


def edit_loggers(job: Path, **changes: dict[str, object]) -> None:
    """Change settings of the job's saved logger entries (`csv={"version": None}`)."""
    config_file = job / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    for name, settings in changes.items():
        config["logger"][name].update(settings)
    config_file.write_text(yaml.safe_dump(config))


def test_the_report_reads_the_csv_loggers_own_version_folder(sweep: Path, tmp_path: Path) -> None:
    out = run_cli("report", str(sweep), "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "warning" not in out.stderr  # it said: job 0 has no val/loss curve in its folder
    assert f"wrote {tmp_path / 'report' / 'val_curves.png'}" in out.stdout.splitlines()
    curve = read_curve(sweep / "0", frozenset({"csv"}))
    assert steps(curve) == [1, 3, 4]
    assert curve[-1][1] == pytest.approx(final_val_loss(sweep / "0"), rel=1e-6)


def test_tensorboard_events_are_read_under_the_configured_name(sweep: Path) -> None:
    job = sweep / "0"
    from_tensorboard = read_curve(job, frozenset({"tensorboard"}))
    assert steps(from_tensorboard) == [1, 3, 4]
    from_csv = read_curve(job, frozenset({"csv"}))
    assert steps(from_csv) == steps(from_tensorboard)
    assert [v for _, v in from_tensorboard] == pytest.approx([v for _, v in from_csv], rel=1e-6)


def test_tensorboard_outside_the_job_folder_is_read_from_the_jobs_own_folder(
    sweep: Path, tmp_path: Path
) -> None:
    """`logger.tensorboard.save_dir=<shared folder>`: each job's events in its job name's
    folder there, beside other jobs' (here a decoy, which must not be read)."""
    job = Path(shutil.copytree(sweep, tmp_path / "sweep", symlinks=True)) / "0"
    shared = tmp_path / "shared"
    (own,) = (job / "tb").iterdir()  # tb/<job name>/
    shared.mkdir()
    shutil.move(job / "tb", shared / "tb")
    decoy = shared / "tb" / "model.optimizer.lr=0.5"
    shutil.copytree(shared / "tb" / own.name, decoy)
    edit_loggers(job, tensorboard={"save_dir": str(shared)})
    curve = read_curve(job, frozenset({"tensorboard"}))
    assert steps(curve) == [1, 3, 4]
    shutil.rmtree(shared / "tb" / own.name)
    assert read_curve(job, frozenset({"tensorboard"})) == []  # not the decoy's


def test_a_csv_logger_with_no_version_is_read_from_its_latest_version_folder(
    sweep: Path, tmp_path: Path
) -> None:
    """`version: null`: Lightning's version_N, the next number at each run."""
    job = Path(shutil.copytree(sweep / "0", tmp_path / "0", symlinks=True))
    shutil.move(job / "csv" / "v", job / "csv" / "version_1")
    (job / "csv" / "version_0").mkdir()
    (job / "csv" / "version_0" / "metrics.csv").write_text("step,val/loss\n1,9.0\n")
    edit_loggers(job, csv={"version": None})
    assert steps(read_curve(job, frozenset({"csv"}))) == [1, 3, 4]
    edit_loggers(job, csv={"version": 0})  # a number: version_0
    assert read_curve(job, frozenset({"csv"})) == [(1.0, 9.0)]


def test_a_setting_that_is_not_text_is_ignored_for_the_default_folder(
    sweep: Path, tmp_path: Path
) -> None:
    job = Path(shutil.copytree(sweep / "0", tmp_path / "0", symlinks=True))
    shutil.move(job / "csv" / "v" / "metrics.csv", job / "csv" / "metrics.csv")
    edit_loggers(job, csv={"version": ["v"]})
    assert steps(read_curve(job, frozenset({"csv"}))) == [1, 3, 4]
    edit_loggers(job, csv={"version": "v", "save_dir": "${paths.nowhere}"})
    assert steps(read_curve(job, frozenset({"csv"}))) == [1, 3, 4]  # unresolved: default
