"""Bad logger settings end in one `error:` line, soon, with nothing written elsewhere: a save_dir
that is a file or on a read-only file system (every logger alike), an MLflow store that is not a
database or a server that does not answer, a W&B project name W&B refuses, an MLflow run id
that the store lacks, and WANDB_MODE, which wins over logger.wandb.offline.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import wandb

from lmtrain.errors import LMTrainError, find_cause
from lmtrain.utils.instantiate import instantiate_loggers
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

SAVE_DIR_LOGGERS = ["csv", "tensorboard", "wandb", "mlflow"]


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own MLflow store, not a server of the developer's (as in test_loggers.py)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


def refusal(compose_cfg, *overrides: str, resuming: bool = False) -> str:
    """The one line that building (and first using) the configured loggers ends with."""
    cfg = compose_cfg(*overrides)
    with pytest.raises(Exception) as raised:
        for logger in instantiate_loggers(cfg.logger, run_cfg=cfg, resuming=resuming):
            logger.log_hyperparams({"seed": 1})
    found = find_cause(raised.value, LMTrainError)
    assert found is not None, raised.value
    message = str(found)
    assert "\n" not in message, message
    return message


def refused_port() -> int:
    """A local port nothing listens on: connections to it are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("name", SAVE_DIR_LOGGERS)
def test_a_save_dir_that_is_a_file_is_one_line_for_every_logger(
    name: str, compose_cfg, tmp_path: Path
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("kept\n")
    message = refusal(compose_cfg, f"logger={name}", f"logger.{name}.save_dir={a_file}")
    assert message.startswith(f"logger.{name}.save_dir={a_file} cannot be written to ("), message
    assert f"{a_file} is a file" in message and "give a folder you can write to" in message
    assert a_file.read_text() == "kept\n"


@pytest.mark.parametrize("name", SAVE_DIR_LOGGERS)
def test_a_save_dir_whose_name_is_too_long_is_one_line_for_every_logger(
    name: str, compose_cfg, tmp_path: Path
) -> None:
    """The check itself ended in `OSError: [Errno 36] File name too long`, a traceback."""
    save_dir = tmp_path / ("a" * 300)
    message = refusal(compose_cfg, f"logger={name}", f"logger.{name}.save_dir={save_dir}")
    assert message.startswith(f"logger.{name}.save_dir={save_dir} cannot be written to ("), message
    assert "File name too long" in message


@pytest.mark.parametrize("name", SAVE_DIR_LOGGERS)
def test_a_save_dir_in_a_folder_that_refuses_new_ones_is_one_line_for_every_logger(
    name: str, compose_cfg
) -> None:
    """/proc passes root's permission and read-only checks, and refuses a new folder even to
    root: W&B moved its run to the temp folder (another user is refused by permissions)."""
    save_dir = Path("/proc/lmtrain-logs")
    message = refusal(compose_cfg, f"logger={name}", f"logger.{name}.save_dir={save_dir}")
    assert message.startswith(f"logger.{name}.save_dir={save_dir} cannot be written to ("), message
    reason = "refuses new folders (" if os.geteuid() == 0 else "is not writable by this user"
    assert f"/proc {reason}" in message, message


@pytest.mark.parametrize("name", SAVE_DIR_LOGGERS)
def test_a_read_only_save_dir_is_one_line_for_every_logger(
    name: str, compose_cfg, read_only_dir: Path
) -> None:
    started = time.monotonic()
    save_dir = read_only_dir / "logs"
    message = refusal(compose_cfg, f"logger={name}", f"logger.{name}.save_dir={save_dir}")
    assert message.startswith(f"logger.{name}.save_dir={save_dir} cannot be written to ("), message
    assert "read-only file system" in message, message
    assert time.monotonic() - started < 30  # MLflow alone retried its store for 100 s


def test_a_read_only_wandb_save_dir_is_refused_not_moved_to_the_temp_folder(
    tmp_path: Path, data_dir: Path, read_only_dir: Path
) -> None:
    temp_wandb = Path(tempfile.gettempdir()) / "wandb"
    before = sorted(temp_wandb.iterdir()) if temp_wandb.is_dir() else []
    run_dir = tmp_path / "run"
    done = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=wandb", f"logger.wandb.save_dir={read_only_dir}"),
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: logger.wandb.save_dir={read_only_dir} cannot be written"), last
    assert "Traceback" not in done.stderr
    after = sorted(temp_wandb.iterdir()) if temp_wandb.is_dir() else []
    assert after == before  # W&B's fallback folder got no run
    assert not (run_dir / "checkpoints").exists()


def test_an_mlflow_store_that_is_not_a_database_is_one_line_at_once(
    compose_cfg, tmp_path: Path
) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("not a database\n" * 20)
    started = time.monotonic()
    message = refusal(
        compose_cfg, "logger=mlflow", f"logger.mlflow.tracking_uri=sqlite:///{not_a_database}"
    )
    assert time.monotonic() - started < 30  # MLflow's own retries take about 100 s
    assert message.startswith(f"the MLflow store sqlite:///{not_a_database} (from "), message
    assert "file is not a database" in message and "logger.mlflow.tracking_uri" in message
    assert not_a_database.read_text() == "not a database\n" * 20


def test_an_mlflow_database_in_a_read_only_folder_is_one_line_at_once(
    compose_cfg, read_only_dir: Path
) -> None:
    started = time.monotonic()
    uri = f"sqlite:///{read_only_dir}/mlflow.db"
    message = refusal(compose_cfg, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    assert time.monotonic() - started < 30
    assert message.startswith(f"the MLflow store {uri} (from logger.mlflow.tracking_uri)"), message
    assert "read-only file system" in message


def test_an_mlflow_server_that_refuses_is_one_line_within_a_minute(
    compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MAX_RETRIES", "BACKOFF_FACTOR", "TIMEOUT"):
        monkeypatch.delenv(f"MLFLOW_HTTP_REQUEST_{name}", raising=False)
    uri = f"http://127.0.0.1:{refused_port()}"
    started = time.monotonic()
    message = refusal(compose_cfg, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}")
    assert time.monotonic() - started < 60  # MLflow's own back-off: minutes
    assert message.startswith(f"MLflow could not start its run in {uri} (from logger.mlflow."), (
        message
    )
    assert "Connection refused" in message and "set logger.mlflow.tracking_uri" in message
    # The bound is for the first request only: later ones keep MLflow's own retries.
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_the_first_mlflow_request_keeps_the_users_own_http_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lmtrain.utils.logger_checks import bounded_mlflow_wait

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    with bounded_mlflow_wait():
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
        assert int(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) < 120  # MLflow's default
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ


def test_an_unreachable_mlflow_server_on_the_command_line_is_one_error_line(
    tmp_path: Path, data_dir: Path
) -> None:
    uri = f"http://127.0.0.1:{refused_port()}"
    started = time.monotonic()
    done = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=mlflow", f"logger.mlflow.tracking_uri={uri}"),
        f"hydra.run.dir={tmp_path / 'run'}",
        env={"MLFLOW_TRACKING_URI": ""},
        timeout=120,
    )
    assert time.monotonic() - started < 90  # start-up included
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow could not start its run in {uri}"), last
    assert "Traceback" not in done.stderr


def test_a_wandb_project_name_wandb_refuses_is_one_line(compose_cfg) -> None:
    message = refusal(compose_cfg, "logger=wandb", "logger.wandb.project='bad/proj#?'")
    assert message.startswith("logger.wandb.project='bad/proj#?' is not a W&B project name ("), (
        message
    )


@pytest.mark.parametrize("project", ["''", "' '"])
def test_an_empty_wandb_project_is_one_line(compose_cfg, project: str) -> None:
    """Lightning's WandbLogger would log an empty project into "lightning_logs" instead."""
    message = refusal(compose_cfg, "logger=wandb", f"logger.wandb.project={project}")
    assert message.startswith(f"logger.wandb.project={project} is empty: "), message


def test_a_configured_mlflow_run_id_the_store_lacks_names_the_setting(
    compose_cfg, tmp_path: Path
) -> None:
    message = refusal(compose_cfg, "logger=mlflow", "logger.mlflow.run_id=deadbeef")
    assert message.startswith("MLflow run deadbeef (from logger.mlflow.run_id) is not in "), message
    assert "set logger.mlflow.run_id=null to start a new MLflow run" in message
    assert "mlflow_run_id" not in message.replace("logger.mlflow.run_id", "")
    assert not (tmp_path / "run" / "mlflow_run_id").exists()


def test_wandb_mode_disabled_wins_over_the_configs_offline_run(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cfg = compose_cfg("logger=wandb")
    assert cfg.logger.wandb.offline is True
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg)
    try:
        logger.log_hyperparams({"seed": 1})
        logger.log_metrics({"train/loss": 1.0}, step=0)
        assert logger.experiment.settings.mode == "disabled"
    finally:
        wandb.finish()
    run_dir = tmp_path / "run"
    assert not (run_dir / "wandb").exists() and not (run_dir / "wandb_run_id").exists()


def test_a_wandb_mode_wandb_does_not_know_is_one_line(
    compose_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "bogus")
    message = refusal(compose_cfg, "logger=wandb")
    assert message.startswith("WANDB_MODE='bogus' is not a W&B mode: "), message


def test_an_online_wandb_run_without_an_api_key_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """W&B's UsageError ("No API key configured") came at its first use, after the data and the
    model were built, as a traceback (red team rev_api). No WANDB_MODE, no key, a HOME without
    a .netrc: what a new user has."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"HOME": str(tmp_path), "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    cli = tiny_cli(tmp_path, data_dir, "logger=wandb", "logger.wandb.offline=false")
    result = subprocess.run(
        [sys.executable, "-m", "lmtrain.train", *cli],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line_error(
        result,
        "W&B refused the run: No API key configured.",
        "(or set WANDB_API_KEY, or log offline: logger.wandb.offline=true, WANDB_MODE=offline)",
    )
