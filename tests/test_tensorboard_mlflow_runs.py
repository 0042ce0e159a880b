"""TensorBoard and MLflow runs hold one run's history each (utils/tensorboard_run.py,
utils/logger_runs.py; red team logsweep 17):
- a fixed `logger.mlflow.run_id` under `-m` put every job into one MLflow run (exit 0);
- parallel jobs that made a new MLflow SQLite store at once failed (one job, on its tables);
- a sweep's `group` and `tags` replaced the user's own MLflow tags of those names;
- a run that replaced another (overwrite_run=true), a shared `logger.tensorboard.save_dir` or a
  fixed version showed both runs' events as one TensorBoard run;
- a resume of a run that had ended hid its final validation in TensorBoard alone.

TensorBoard is read back with its EventAccumulator, MLflow with its client.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict, read_write
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lmtrain.utils.logger_runs import MLFLOW_RUN_ID_FILE, MLFlowLogger, mlflow_kwargs
from lmtrain.utils.tensorboard_run import tensorboard_kwargs
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error, refusal, tree_digest
from tests.helpers.cli import run_cli, run_sweep, tiny_cli

NO_SERVER = {"MLFLOW_TRACKING_URI": ""}  # each test's own store, not a developer's server
# A second session of a run: 2 steps, a validation after each.
SHORT = ("trainer.max_steps=2", "trainer.val_check_interval=1")


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


def steps(folder: Path, tag: str) -> list[int]:
    """The steps of `tag` TensorBoard shows for the run in `folder` (its purges applied)."""
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def train(tmp_path: Path, data_dir: Path, run: Path, *overrides: str) -> str:
    """A tiny run into `run` that must end with exit 0; its stderr."""
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", *overrides))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr


@contextmanager
def multirun_job(cfg: DictConfig, sweep_dir: Path) -> Iterator[None]:
    """Hydra's config says `cfg`'s run is a job of a multirun into `sweep_dir`, while inside."""
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.hydra.mode, cfg.hydra.sweep.dir = RunMode.MULTIRUN, str(sweep_dir)
    HydraConfig().set_config(cfg)
    try:
        yield
    finally:  # later tests of this process compose as plain single runs
        with read_write(cfg.hydra):
            cfg.hydra.mode = RunMode.RUN
        HydraConfig().set_config(cfg)


# MLflow


def test_an_mlflow_run_id_fixed_for_a_sweep_is_refused_before_any_job_logs(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "seed=1,2", "logger.mlflow.run_id=abc123",
                    tiny=("trainer.max_steps=2", "logger=mlflow"), env=NO_SERVER)  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    line = (
        "logger.mlflow.run_id=abc123 is one MLflow run id for every job of the sweep, which "
        "would log them all into one run: drop it (logger.mlflow.run_id=null: each job a new "
        "MLflow run, which resuming the job continues)"
    )
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 2 of 2 jobs of the sweep under {sweep} failed (job 0 in 0: {line}; job 1 in 1: "
        f"{line}): see each one's log above or its train.log; no job has a result"
    )
    for job in ("0", "1"):
        assert not (sweep / job / MLFLOW_RUN_ID_FILE).exists()


def test_an_mlflow_run_id_another_job_of_the_sweep_holds_is_refused(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An id made per job by a `${...}` that still came out as another job's (an environment
    variable every job shares) is that job's run."""
    monkeypatch.setenv("EXP_RUN", "0123456789abcdef")
    cfg = compose_cfg("logger=mlflow", "logger.mlflow.run_id=${oc.env:EXP_RUN}")
    other = tmp_path / "0"
    other.mkdir()
    (other / MLFLOW_RUN_ID_FILE).write_text("0123456789abcdef\n")
    with multirun_job(cfg, tmp_path):
        message = refusal(lambda: mlflow_kwargs(cfg.logger.mlflow, cfg, resuming=False))
        assert message == (
            f"logger.mlflow.run_id=0123456789abcdef is also the MLflow run id of {other}, "
            "another job of this sweep: the two would log into one run: drop it "
            "(logger.mlflow.run_id=null: each job a new MLflow run, which resuming the job "
            "continues)"
        )
        (other / MLFLOW_RUN_ID_FILE).write_text("fedcba9876543210\n")  # its own run: fine
        assert mlflow_kwargs(cfg.logger.mlflow, cfg, resuming=False)["run_id"] == (
            "0123456789abcdef"
        )
    # A single run continues the MLflow run it is given.
    assert mlflow_kwargs(cfg.logger.mlflow, cfg, resuming=False)["run_id"] == "0123456789abcdef"


def test_parallel_jobs_make_one_new_mlflow_store_and_keep_the_users_tags(
    tmp_path: Path, data_dir: Path
) -> None:
    """Both jobs of a parallel sweep made the store's tables at once: one failed (`table metrics
    already exists`, said to be a tracking URI MLflow cannot use). The tags `group` and `tags`
    the user gave were replaced by the sweep's."""
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "model.optimizer.lr=1e-3,3e-4",
                    "+logger.mlflow.tags.group=lr-study", "+logger.mlflow.tags.tags=mine",
                    launcher="slurm_local", tiny=("trainer.max_steps=2", "logger=mlflow"),
                    env=NO_SERVER, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    store = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    runs = store.search_runs([e.experiment_id for e in store.search_experiments()])
    by_id = {run.info.run_id: run for run in runs}
    for job, lr in (("0", "0.001"), ("1", "0.0003")):
        run = by_id[(sweep / job / MLFLOW_RUN_ID_FILE).read_text().strip()]
        assert run.info.run_name == f"model.optimizer.lr={lr}"
        tags = run.data.tags
        assert (tags["group"], tags["tags"]) == ("lr-study", "mine")
        assert tags["run_dir"] == str(sweep / job)
        assert [m.step for m in store.get_metric_history(run.info.run_id, "train/loss")] == [0, 1]
    assert len(runs) == 2


def test_a_new_mlflow_store_waits_for_the_process_making_it(tmp_path: Path) -> None:
    """The lock beside the database is held while the store is made: a logger made meanwhile
    waits for it, then uses the store."""
    store = tmp_path / "mlflow"
    store.mkdir()
    released = tmp_path / "released"
    holder = (
        "import sys, time; from pathlib import Path; from lmtrain.utils.locks import acquire\n"
        "let_go = acquire(Path(sys.argv[1]), wait=True); print('held', flush=True)\n"
        "time.sleep(2); Path(sys.argv[2]).touch(); let_go()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", holder, str(store / "mlflow.db.lock"), str(released)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        logger = MLFlowLogger(save_dir=str(store), experiment_name="waits")
        assert released.exists()  # made once the holder let go
        assert logger.run_or_refuse()
    finally:
        child.wait(timeout=60)


# TensorBoard


def test_a_run_that_replaces_another_shows_only_its_own_events(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    train(tmp_path, data_dir, run, "logger=tensorboard")
    assert steps(run / "tensorboard", "train/loss") == [0, 1, 2, 3]
    train(tmp_path, data_dir, run, "logger=tensorboard", *SHORT, "overwrite_run=true")
    assert steps(run / "tensorboard", "train/loss") == [0, 1]
    assert steps(run / "tensorboard", "val/loss") == [0, 1, 2]


def test_a_shared_tensorboard_save_dir_is_refused_unless_overwrite_run(
    tmp_path: Path, data_dir: Path
) -> None:
    shared = tmp_path / "tb"
    first, second = tmp_path / "first", tmp_path / "second"
    train(tmp_path, data_dir, first, "logger=tensorboard", f"logger.tensorboard.save_dir={shared}")
    before = tree_digest(shared)
    log_dir = shared / "tensorboard"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={second}", "seed=2",
                  "logger=tensorboard", f"logger.tensorboard.save_dir={shared}"))  # fmt: skip
    line = assert_one_line_error(out)
    assert re.fullmatch(
        re.escape(
            f"error: logger.tensorboard.save_dir={shared} puts this run's TensorBoard events in "
            f"{log_dir}, which already holds another run's ("
        )
        + r"events\.out\.tfevents\.[^)]+"
        + re.escape(
            "), shown with this one as one run: leave logger.tensorboard.save_dir as configured "
            "(the run folder), pass an empty folder, or overwrite_run=true to replace that run"
        ),
        line,
    ), line
    assert tree_digest(shared) == before
    assert not (second / "checkpoints").exists()
    # overwrite_run=true: the second run replaces the first in that folder.
    train(tmp_path, data_dir, second, "seed=2", "logger=tensorboard",
          f"logger.tensorboard.save_dir={shared}", *SHORT, "overwrite_run=true")  # fmt: skip
    assert steps(log_dir, "train/loss") == [0, 1]


def test_a_fixed_tensorboard_version_is_refused_where_another_run_logged(
    compose_cfg, tmp_path: Path
) -> None:
    shared = tmp_path / "tb"
    cfg = compose_cfg("logger=tensorboard", f"logger.tensorboard.save_dir={shared}",
                      "logger.tensorboard.version=fixed")  # fmt: skip
    entry = cfg.logger.tensorboard
    assert tensorboard_kwargs(entry, cfg, resuming=False) == {}  # nothing there yet
    (shared / "tensorboard" / "fixed").mkdir(parents=True)
    (shared / "tensorboard" / "fixed" / "hparams.yaml").write_text("lr: 0.001\n")
    assert refusal(lambda: tensorboard_kwargs(entry, cfg, resuming=False)) == (
        f"logger.tensorboard.save_dir={shared} with logger.tensorboard.version=fixed puts this "
        f"run's TensorBoard events in {shared / 'tensorboard' / 'fixed'}, which already holds "
        "another run's (hparams.yaml), shown with this one as one run: leave "
        "logger.tensorboard.save_dir and logger.tensorboard.version as configured (the run "
        "folder), pass an empty folder, or overwrite_run=true to replace that run"
    )
    # Resuming, the events are this run's own.
    assert tensorboard_kwargs(entry, cfg, resuming=True) == {"resumed": True, "ended_at": None}
    # In the run folder, which the run has claimed, an earlier run's are replaced.
    cfg.paths.output_dir = str(shared)
    assert tensorboard_kwargs(entry, cfg, resuming=False) == {"purge_step": 0}


def test_resuming_a_run_that_had_ended_keeps_its_final_validation(
    tmp_path: Path, data_dir: Path
) -> None:
    """CSV, W&B and MLflow keep the step-4 final validation of a run that ended at step 4 and
    was resumed to train on; TensorBoard hid it as a killed run's step."""
    run = tmp_path / "run"
    train(tmp_path, data_dir, run, "logger=[tensorboard,csv]")
    train(tmp_path, data_dir, run, "logger=[tensorboard,csv]", "ckpt_path=last",
          "trainer.max_steps=6")  # fmt: skip
    with (run / "csv" / "metrics.csv").open() as f:
        csv_steps = [int(row["step"]) for row in csv.DictReader(f) if row.get("val/loss")]
    assert csv_steps == [1, 3, 4, 5, 6]
    assert steps(run / "tensorboard", "val/loss") == csv_steps
    assert steps(run / "tensorboard", "train/loss") == [0, 1, 2, 3, 4, 5]


def test_a_resume_killed_after_the_run_had_ended_shows_each_step_once(
    tmp_path: Path, data_dir: Path
) -> None:
    """A run that ended at step 4, resumed to train on and killed after logging steps 4-5 but
    before its next checkpoint: the next resume (from step 4 again) hides those steps, though
    metrics.json still reports step 4."""
    run = tmp_path / "run"
    train(tmp_path, data_dir, run, "logger=tensorboard")
    stop = ["+callbacks.stop._target_=tests.test_tensorboard_resume.StopAt",
            "+callbacks.stop.step=5", "+callbacks.stop.validation=false"]  # fmt: skip
    more = ("logger=tensorboard", "ckpt_path=last", "trainer.max_steps=8")
    killed = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", *more, *stop))
    assert killed.returncode == 3, killed.stderr[-3000:]
    train(tmp_path, data_dir, run, *more)
    assert steps(run / "tensorboard", "train/loss") == list(range(8))
    validated = steps(run / "tensorboard", "val/loss")
    assert validated == sorted(set(validated)), validated
