"""Runs in subprocesses that are killed and resumed, and the check that they end as an
uninterrupted run does: the same metrics and weights, bitwise.

The run (`RESUMABLE_RUN`) is tiny but has everything that makes resuming hard: dropout (global
RNG), gradient accumulation over 2 micro-batches, epochs of `resumable_corpus` (9
micro-batches, rounded to 8: whole steps), validation with sampled text between steps and
inside one (every 15 micro-batches), and checkpoints both after a training batch
(`every_n_train_steps`) and after a validation. `SaveFinalWeights` writes what the comparison
reads.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from tests.helpers import ROOT
from tests.helpers.cli import command_environment
from tests.helpers.compose import TINY
from tests.helpers.corpora import write_corpus
from tests.helpers.environment import SESSION_ENVIRONMENT
from tests.helpers.warm_client import WarmProcess, start_warm

STEPS = 57
RESUMABLE_RUN = [
    *TINY,
    "model.config.resid_pdrop=0.1",
    "model.config.embd_pdrop=0.1",
    "model.config.attn_pdrop=0.1",
    "data=text_files",
    "data.tokenizer.kind=char",
    "data.batch_size=4",
    "global_batch_size=8",  # 2 micro-batches per optimizer step
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=15",  # micro-batches: validations fall between checkpoints too
    "trainer.log_every_n_steps=5",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "logger=csv",  # its metrics.csv must come out whole after kills and resumes too
    "+callbacks.exact_resume._target_=lmtrain.callbacks.resume.ExactResume",
]
# Wall-clock figures differ between runs; everything else must match exactly.
IGNORED = ("time/", "/device/", "tok/s", "train/time", "_per_sec", "mfu")
# The override that adds SaveFinalWeights to a run (its `path` is set beside it).
FINAL_WEIGHTS = "+callbacks.final_weights._target_=tests.helpers.killed_runs.SaveFinalWeights"


def resumable_corpus(folder: Path) -> Path:
    """~1.4 KB of text: 9 micro-batches per epoch (8 under accumulation of 2), so a 57-step run
    crosses 14 epochs."""
    text = (write_corpus(folder / "docs", n_docs=1, lines=45) / "doc0.txt").read_text()
    path = folder / "corpus.txt"
    path.write_text(text)
    return path


class SaveFinalWeights(Callback):
    """Writes the weights at the end of training to `path` (rank 0).

    The reference the tests compare a resumed run with, written by the test itself rather than
    by the checkpoint callback under test.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            final = {"step": trainer.global_step, "state_dict": pl_module.state_dict()}
            torch.save(final, self.path)


def train_command(corpus: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    """`python -m lmtrain.train` of `RESUMABLE_RUN` on `corpus` in `run_dir`, `extra` added."""
    overrides = [f"data.source.path={corpus}", f"paths.data_dir={data_dir}", *extra]
    overrides += [
        FINAL_WEIGHTS,
        f"+callbacks.final_weights.path={run_dir / 'final_weights.pt'}",
    ]
    command = [sys.executable, "-m", "lmtrain.train", *RESUMABLE_RUN, *overrides]
    return [*command, f"hydra.run.dir={run_dir}"]


def uninterrupted_run(folder: Path, corpus: Path, data_dir: Path) -> Path:
    """`RESUMABLE_RUN` on `corpus` trained to its end in folder/run (its output in
    folder/train.out): what a killed and resumed run is compared with."""
    run_dir = folder / "run"
    finish(train_command(corpus, data_dir, run_dir), folder / "train.out")
    return run_dir


def start(command: list[str], log: Path) -> subprocess.Popen[bytes] | WarmProcess:
    """The run in its own process group, so a kill reaches DDP's other rank too; `python -m`
    as a fork of the warm server where it can be one (`tests.helpers.warm_client`)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    if command[:2] == [sys.executable, "-m"]:
        server_env = command_environment(SESSION_ENVIRONMENT)
        warm = start_warm(command[1:], env, log, server_env)
        if warm is not None:
            return warm
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def kill(proc: subprocess.Popen[bytes] | WarmProcess) -> int:
    """SIGKILL to the run's whole process group; its exit status (the run's own, should it have
    ended first: the caller's assertion then names it, where killpg would raise)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=60)


def finish(command: list[str], log: Path) -> None:
    """Run `command` to its end; it must succeed (its output is appended to `log`)."""
    proc = start(command, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]


def kill_at_marker(command: list[str], log: Path, marker: Path) -> None:
    """Start `command` and SIGKILL it once `marker` exists (written by a callback of the run
    where it stalls); it must still be running then."""
    proc = start(command, log)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]


def wait_for_saves(proc: subprocess.Popen[bytes] | WarmProcess, path: Path, saves: int) -> None:
    """Return once `path` has been saved `saves` more times (see `checkpoint_id`), or the run
    has ended."""
    seen = checkpoint_id(path)
    while saves and proc.poll() is None:
        if checkpoint_id(path) != seen:
            saves, seen = saves - 1, checkpoint_id(path)
        time.sleep(0.005)


def checkpoint_id(path: Path) -> tuple[int, int] | None:
    """Changes with every save of `path`: each atomic save is a new file renamed into place."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def csv_history(run_dir: Path, final_epoch_apart: bool = False) -> dict[int | str, dict[str, str]]:
    """The run's csv/metrics.csv as {step: {metric: value as written}}, without wall-clock
    columns; rows of one step merged (a resumed run logs the same values, in rows split at
    the same places or not). `final_epoch_apart`: the last row (the final validation) under
    "final", without its epoch."""
    history: dict[int | str, dict[str, str]] = {}
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        values = {k: v for k, v in row.items() if v and not any(p in k for p in IGNORED)}
        if final_epoch_apart and i == len(rows) - 1:
            history["final"] = {k: v for k, v in values.items() if k != "epoch"}
        else:
            history.setdefault(int(row["step"]), {}).update(values)
    return history


def csv_rows(run_dir: Path, final_epoch_apart: bool = False) -> list[tuple[str, tuple[str, ...]]]:
    """Each row of the run's csv/metrics.csv as (step, the metrics it holds, wall-clock ones
    aside: a resumed throughput window has too few batches for rates), in file order;
    `final_epoch_apart`: see `csv_history`."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    held = [[k for k, v in row.items() if v and not any(p in k for p in IGNORED)] for row in rows]
    found = [(row["step"], tuple(sorted(keys))) for row, keys in zip(rows, held, strict=True)]
    if final_epoch_apart and found:
        found[-1] = (found[-1][0], tuple(k for k in found[-1][1] if k != "epoch"))
    return found


def final_state(run_dir: Path) -> tuple[dict[str, float], dict[str, torch.Tensor], int]:
    """metrics.json without wall-clock keys, and the weights and step at the end of training."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics = {k: v for k, v in metrics.items() if not any(part in k for part in IGNORED)}
    final = torch.load(run_dir / "final_weights.pt", map_location="cpu", weights_only=True)
    return metrics, final["state_dict"], final["step"]


def assert_same_run(
    run_dir: Path, reference: Path, tolerance: float = 0.0, final_epoch_apart: bool = False
) -> None:
    """Bitwise the same (`tolerance=0`), or within `tolerance` relative and absolute;
    `final_epoch_apart`: see `csv_history`."""
    metrics, weights, step = final_state(run_dir)
    ref_metrics, ref_weights, ref_step = final_state(reference)
    assert step == ref_step == STEPS
    assert metrics == pytest.approx(ref_metrics, rel=tolerance, abs=tolerance)
    assert weights.keys() == ref_weights.keys()
    differ = [
        k
        for k in weights
        if not torch.allclose(weights[k], ref_weights[k], rtol=tolerance, atol=tolerance)
    ]
    assert not differ, f"weights differ from the uninterrupted run: {differ}"
    if tolerance == 0:  # the CSV logger's rows, each value as written, all of them kept
        ours, theirs = (csv_history(d, final_epoch_apart) for d in (run_dir, reference))
        apart = [
            (k, ours.get(k), theirs.get(k))
            for k in {*ours, *theirs}
            if ours.get(k) != theirs.get(k)
        ]
        assert ours == theirs, f"CSV rows differ (step, resumed, uninterrupted): {apart[:5]}"
        # Row for row: no row logged twice (merged above, a repeat would not show).
        assert csv_rows(run_dir, final_epoch_apart) == csv_rows(reference, final_epoch_apart)


class KillAtTrainEpochEnd(Callback):
    """kill -9 of this process in `on_train_epoch_end` of epoch `epoch`: after that epoch's
    validation and its checkpoints, before the hooks Lightning calls after (its checkpoint
    callbacks' epoch-end saves, an EarlyStopping deciding at the epoch's end)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)
