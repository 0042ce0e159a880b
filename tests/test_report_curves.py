"""The val/loss curves of `lmtrain.report` (utils/sweep_curves.py), red team rev_logsweep17.

An `overwrite_run=true` sweep into an earlier sweep's folder showed the earlier W&B run's steps 3
and 4 after the new run's 0..2 (every `wandb/*run-*` of the job folder was read); a sweep that
logged to TensorBoard and MLflow only got a val_curves.png with blank axes and no word of why.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from torch.utils.tensorboard import SummaryWriter

from lmtrain.report import read_jobs
from lmtrain.utils.sweep_curves import CURVE_SOURCES, job_loggers, read_curve
from tests.helpers.cli import run_cli, run_sweep

pytestmark = pytest.mark.filterwarnings("ignore")

# Validations after every step (0-based 0, 1), then the final one on the whole split at 2.
SHORT = ("trainer.max_steps=2", "trainer.val_check_interval=1")
MLFLOW_ONLY = {"mlflow": {"_target_": "lmtrain.utils.logger_runs.MLFlowLogger"}}


def final_val_loss(job: Path) -> float:
    return json.loads((job / "metrics.json").read_text())["val/loss"]


def steps(curve: list[tuple[float, float]]) -> list[float]:
    return [step for step, _ in curve]


@pytest.fixture(scope="module")
def replaced(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A one-job sweep of 4 steps logged to W&B and TensorBoard, then one of 2 steps with a
    validation after each, `overwrite_run=true` into the same folder."""
    tmp = tmp_path_factory.mktemp("replaced")
    sweep = tmp / "sweep"
    loggers = ("logger=[wandb,tensorboard]", "trainer.max_steps=4")
    first = run_sweep(tmp, data_dir, sweep, "model.optimizer.lr=1e-3", tiny=loggers)
    assert first.returncode == 0, first.stderr[-3000:]
    again = ("overwrite_run=true", *SHORT)
    second = run_sweep(tmp, data_dir, sweep, "model.optimizer.lr=1e-3", *again, tiny=loggers)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(list((sweep / "0" / "wandb").glob("offline-run-*"))) == 2  # both runs' logs
    return sweep


@pytest.fixture(scope="module")
def tensorboard_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """Two jobs of 4 steps logged to TensorBoard only (validations at 1, 3, then 4)."""
    tmp = tmp_path_factory.mktemp("tensorboard_sweep")
    sweep = tmp / "sweep"
    tiny = ("logger=tensorboard", "trainer.max_steps=4")
    out = run_sweep(tmp, data_dir, sweep, "model.optimizer.lr=1e-3,3e-4", tiny=tiny)
    assert out.returncode == 0, out.stderr[-3000:]
    return sweep


def test_the_curve_is_the_current_wandb_runs_only(replaced: Path) -> None:
    job = replaced / "0"
    curve = read_curve(job)
    assert steps(curve) == [0, 1, 2]  # the replaced run's 3 and 4 were shown after them
    assert curve[-1][1] == pytest.approx(final_val_loss(job), rel=1e-6)
    (read,) = read_jobs(replaced)
    assert read.curve == curve
    assert read.loggers == {"wandb", "tensorboard"}


def test_tensorboard_gives_the_same_curve_without_the_replaced_runs_events(
    replaced: Path,
) -> None:
    job = replaced / "0"
    from_tensorboard, from_wandb = read_curve(job, frozenset({"tensorboard"})), read_curve(job)
    assert steps(from_tensorboard) == steps(from_wandb) == [0, 1, 2]
    assert [v for _, v in from_tensorboard] == pytest.approx([v for _, v in from_wandb])


def test_a_tensorboard_only_sweep_is_reported_with_its_curves(
    tensorboard_sweep: Path, tmp_path: Path
) -> None:
    out = run_cli("report", str(tensorboard_sweep), "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "warning" not in out.stderr
    jobs = read_jobs(tensorboard_sweep)
    for job in jobs:
        assert steps(job.curve) == [1, 3, 4]
        assert job.curve[-1][1] == pytest.approx(final_val_loss(job.folder), rel=1e-6)
    assert jobs[0].curve != jobs[1].curve
    assert f"wrote {tmp_path / 'report' / 'val_curves.png'}" in out.stdout.splitlines()
    assert "![val/loss](val_curves.png)" in (tmp_path / "report" / "report.md").read_text()


def log_to_mlflow_only(job: Path) -> None:
    """The job as a `logger=mlflow` run leaves it: its config names MLflow, no curve files."""
    config_file = job / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config_file.write_text(yaml.safe_dump({**config, "logger": MLFLOW_ONLY}))
    shutil.rmtree(job / "tensorboard")


def test_a_sweep_without_curves_writes_no_png_and_says_why(
    tensorboard_sweep: Path, tmp_path: Path
) -> None:
    """logger=mlflow: its store is not in the job folder. Blank axes were written, exit 0."""
    sweep = Path(shutil.copytree(tensorboard_sweep, tmp_path / "sweep", symlinks=True))
    out = run_cli("report", str(sweep))
    assert out.returncode == 0 and (sweep / "val_curves.png").is_file()  # an earlier report's
    for num in ("0", "1"):
        log_to_mlflow_only(sweep / num)
    out = run_cli("report", str(sweep))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f"warning: jobs 0, 1 have no val/loss curve in their folders (the report reads it from "
        f"{CURVE_SOURCES}; they logged to mlflow): no val_curves.png"
    ]
    assert not (sweep / "val_curves.png").exists()  # the earlier report's is not left beside it
    assert [line for line in out.stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote {sweep / 'report.csv'}",
        f"wrote {sweep / 'report.md'}",
    ]
    markdown = (sweep / "report.md").read_text()
    assert "val_curves.png" not in markdown and "No job has a val/loss curve." in markdown


def test_a_job_without_a_curve_is_named_and_left_out_of_the_plot(
    tensorboard_sweep: Path, tmp_path: Path
) -> None:
    sweep = Path(shutil.copytree(tensorboard_sweep, tmp_path / "sweep", symlinks=True))
    log_to_mlflow_only(sweep / "1")
    out = run_cli("report", str(sweep))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr.splitlines() == [
        f"warning: job 1 has no val/loss curve in its folder (the report reads it from "
        f"{CURVE_SOURCES}; it logged to mlflow): left out of val_curves.png"
    ]
    assert (sweep / "val_curves.png").is_file()


def test_a_logger_the_run_no_longer_uses_gives_no_curve(tensorboard_sweep: Path) -> None:
    """A replaced run's TensorBoard events stay in the folder when the new run logs elsewhere."""
    job = tensorboard_sweep / "0"
    assert steps(read_curve(job)) == [1, 3, 4]
    assert read_curve(job, frozenset({"mlflow"})) == []
    assert read_curve(job, frozenset({"wandb", "csv"})) == []


def test_job_loggers_are_the_kinds_of_the_saved_configs_entries() -> None:
    def entry(target: str) -> dict[str, str]:
        return {"_target_": target}

    config = {
        "logger": {
            "wandb": entry("lightning.pytorch.loggers.WandbLogger"),
            "csv": entry("lmtrain.utils.csv_history.ResumableCSVLogger"),
            "tb": entry("lmtrain.utils.logger_runs.TensorBoardLogger"),
            "mlflow": entry("lmtrain.utils.logger_runs.MLFlowLogger"),
        }
    }
    assert job_loggers(config) == {"wandb", "csv", "tensorboard", "mlflow"}
    assert job_loggers({"logger": None}) == frozenset()  # logger=none: no curve to expect
    assert job_loggers({}) is None  # not saved: every source is read


def scalars(folder: Path, points: dict[int, float], purge_step: int | None = None) -> None:
    """One SummaryWriter session in `folder`: train/loss and val/loss at each step."""
    writer = SummaryWriter(str(folder), purge_step=purge_step)
    for step, value in points.items():
        writer.add_scalar("train/loss", value + 1, step)
        writer.add_scalar("val/loss", value, step)
    writer.close()


def test_tensorboard_events_read_as_tensorboard_shows_them(tmp_path: Path) -> None:
    """A resumed run's restart marker hides the steps it logs again; a run that started over
    in the folder without one (an earlier lmtrain) hides everything before."""
    events = tmp_path / "resumed" / "tensorboard"
    scalars(events, {1: 4.0, 3: 3.0, 5: 2.0})  # killed after step 5; checkpoint at 4
    scalars(events, {4: 2.5, 5: 2.25, 7: 1.5}, purge_step=4)
    assert read_curve(events.parent) == [(1, 4.0), (3, 3.0), (4, 2.5), (5, 2.25), (7, 1.5)]
    events = tmp_path / "started_over" / "tensorboard" / "model.optimizer.lr=0.001"
    scalars(events, {1: 4.0, 3: 3.0, 4: 2.75})
    scalars(events, {0: 4.5, 1: 4.25, 2: 4.0})
    assert read_curve(events.parent.parent) == [(0, 4.5), (1, 4.25), (2, 4.0)]
