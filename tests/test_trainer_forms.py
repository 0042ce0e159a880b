"""Trainer settings in the forms Lightning documents, and the lines around them: a time span as a
dict (`trainer.max_time={minutes: 1}`, a time-based `val_check_interval`), an EarlyStopping whose
misspelt metric would stop the run with a traceback, and a SIGTERM to a run that saved nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

EARLY_STOPPING = "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping"


def test_max_time_as_a_dict_stops_the_run_on_time(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=100000", "callbacks.text_samples=null")
    out = run_cli("train", *cli, "+trainer.max_time={seconds:3}", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    steps = json.loads((run / "metrics.json").read_text())["trainer/global_step"]
    assert 0 < steps < 100000


def test_time_based_val_check_interval_as_a_dict_trains(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=6", "callbacks.text_samples=null")
    out = run_cli("train", *cli, "trainer.val_check_interval={seconds:2}", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 6


def test_strict_early_stopping_on_a_misspelt_metric_is_refused_lenient_only_warned(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=4", "callbacks.text_samples=null")
    watch = (EARLY_STOPPING, "+callbacks.early_stopping.monitor=val/los")
    out = run_cli("train", *cli, *watch, f"hydra.run.dir={run}")
    assert out.returncode == 1
    assert_one_line_error(
        out,
        "callbacks.early_stopping.monitor='val/los' is not a metric lmtrain logs: "
        "did you mean val/loss?",
    )
    assert not (run / "checkpoints").exists()

    # strict=false: Lightning only warns that the metric is missing, and the run goes on.
    lenient = "+callbacks.early_stopping.strict=false"
    out = run_cli("train", *cli, *watch, lenient, f"hydra.run.dir={tmp_path / 'lenient'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "is not a metric lmtrain logs: did you mean val/loss?" in out.stdout + out.stderr


def test_sigterm_with_nothing_saved_says_the_run_cannot_be_resumed(
    tmp_path: Path, data_dir: Path
) -> None:
    run, pids = tmp_path / "run", tmp_path / "pids"
    cli = [
        o
        for o in tiny_cli(tmp_path, data_dir, "trainer.max_steps=2000")
        if o != "callbacks.rich_progress_bar=null"  # callbacks=none has no such entry
    ]
    command = [
        sys.executable, "-m", "lmtrain.train", *cli, "callbacks=none",
        "trainer.val_check_interval=5000", "+trainer.enable_checkpointing=false",
        "+callbacks.pace._target_=tests.helpers.faults.Pace", f"+callbacks.pace.dirpath={pids}",
        f"hydra.run.dir={run}",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    pid_file, deadline = pids / "rank0.pid", time.monotonic() + 120
    while not pid_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"training never reached the paced steps:\n{proc.communicate()}")
        time.sleep(0.1)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=180)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    line = assert_one_line_error(
        out, f"nothing was saved in {run}, so the run cannot be resumed", "overwrite_run=true"
    )
    assert "ckpt_path=last" not in line
    assert not (run / "checkpoints" / "last.ckpt").exists()
