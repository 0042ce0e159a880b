"""Exact resume: a run killed with SIGKILL and resumed ends bitwise where an uninterrupted one does.

The slow tests run the real CLI in subprocesses and kill them with SIGKILL: at random moments
after a checkpoint exists, and in the middle of a checkpoint write
(`tests.helpers.faults.PausingCheckpointIO`). The run, `RESUMABLE_RUN` of
tests/helpers/killed_runs.py, is tiny but has everything that makes resuming hard (dropout,
gradient accumulation, epochs of an odd number of micro-batches, validations and checkpoints
between and within steps). The fast tests check the pieces in-process.
"""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lmtrain.callbacks.samples import BLOCK_HEADER
from lmtrain.data import TextDataModule
from lmtrain.data.sampler import CHUNK, ResumableWindowSampler
from lmtrain.data.sources import TextFilesSource
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.killed_runs import (
    STEPS,
    assert_same_run,
    finish,
    kill,
    resumable_corpus,
    start,
    train_command,
    uninterrupted_run,
    wait_for_saves,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resumable_corpus(tmp_path_factory.mktemp("resume_corpus"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, corpus: Path, data_dir: Path) -> Path:
    """The uninterrupted run every resumed one is compared with."""
    return uninterrupted_run(tmp_path_factory.mktemp("reference"), corpus, data_dir)


@pytest.mark.slow
def test_run_killed_three_times_and_resumed_ends_as_an_uninterrupted_one(
    tmp_path: Path, corpus: Path, data_dir: Path, reference: Path
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    run_dir, log = tmp_path / "run", tmp_path / "train.out"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = train_command(corpus, data_dir, run_dir)
    delays = []
    for attempt in range(3):
        proc = start([*command, *(["ckpt_path=last"] if attempt else [])], log)
        # Kill at a random moment after this attempt's 1st, 2nd or 3rd checkpoint: anywhere in a
        # step, a validation or a save, yet early enough to leave steps for the next attempts.
        wait_for_saves(proc, last, rng.randint(1, 3))
        delays.append(rng.uniform(0, 0.15))
        time.sleep(delays[-1])
        returncode = kill(proc)
        step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
        assert returncode == -signal.SIGKILL, (
            f"attempt {attempt} ended (seed {seed}):\n{log.read_text()}"
        )
        assert step < STEPS, f"attempt {attempt} got to the end before the kill (seed {seed})"
    finish([*command, "ckpt_path=last"], log)
    # A save killed midway is cleaned up.
    assert not list(last.parent.glob(".*.tmp-*")), f"seed {seed}: {sorted(last.parent.iterdir())}"
    try:
        assert_same_run(run_dir, reference)
    except AssertionError as err:
        raise AssertionError(f"kills after {delays} s (seed {seed}): {err}") from err


@pytest.mark.slow
def test_run_killed_between_a_step_save_and_that_steps_log_keeps_the_steps_row(
    tmp_path: Path, corpus: Path, data_dir: Path, reference: Path
) -> None:
    """Lightning sends a step's metrics to the loggers after every `on_train_batch_end` hook,
    and the step-scheduled last.ckpt was saved in one. Killed right after that save (a window
    of a few milliseconds), the run wrote no row for that step, and its resume, which starts at
    the next step, never logged it: the CSV lacked the step's train/loss (an intermittent
    failure of the test above). Step 15 is saved on schedule (every 3), logged (every 5), and
    ends an epoch: its save now comes as the next epoch's first batch starts."""
    run_dir, log = tmp_path / "run", tmp_path / "train.out"
    command = train_command(corpus, data_dir, run_dir)
    kill_there = "trainer.plugins=[{_target_:tests.helpers.faults.KillAfterStepSave}]"
    assert start([*command, kill_there], log).wait(timeout=600) == -signal.SIGKILL
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 15
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(
    tmp_path: Path, corpus: Path, data_dir: Path, reference: Path
) -> None:
    run_dir, log, marker = tmp_path / "run", tmp_path / "train.out", tmp_path / "paused"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = train_command(corpus, data_dir, run_dir)
    pausing = "_target_:tests.helpers.faults.PausingCheckpointIO"
    pausing = f"{{{pausing},marker:'{marker}',pause_at:3}}"
    proc = start([*command, f"trainer.plugins=[{pausing}]"], log)
    while not marker.exists() and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, log.read_text()[-3000:]
    tmp = Path(marker.read_text())
    before = torch.load(tmp, map_location="cpu", weights_only=False)["global_step"]
    kill(proc)  # the new checkpoint is written, not yet renamed

    assert tmp.parent == last.parent and tmp.exists()
    # The second save of last.ckpt is still there, whole, one save behind the killed one.
    previous = torch.load(last, map_location="cpu", weights_only=False)
    assert 0 < previous["global_step"] < before
    finish([*command, "ckpt_path=last"], log)
    assert not tmp.exists()
    assert_same_run(run_dir, reference)


@pytest.mark.slow
def test_run_killed_before_its_first_last_ckpt_resumes_from_its_best_checkpoint(
    tmp_path: Path, corpus: Path, data_dir: Path, reference: Path
) -> None:
    """No step schedule: the first checkpoints are the first validation's best-* file, then
    last.ckpt. Killed between the two, the run holds only the best file, and `ckpt_path=last`
    (as `resume=`) resumes from it, naming it, to the uninterrupted run's end."""
    run_dir, log = tmp_path / "run", tmp_path / "train.out"
    command = train_command(
        corpus, data_dir, run_dir, "callbacks.model_checkpoint.every_n_train_steps=null"
    )
    killing = "trainer.plugins=[{_target_:tests.helpers.faults.KillAfterSave,prefix:best-}]"
    assert start([*command, killing], log).wait(timeout=600) == -signal.SIGKILL
    (best,) = [p.name for p in (run_dir / "checkpoints").iterdir()]
    assert best.startswith("best-"), best
    finish([*command, "ckpt_path=last"], log)
    assert "last.ckpt is missing" in log.read_text() and best in log.read_text()
    assert_same_run(run_dir, reference)


def test_run_killed_before_any_save_is_told_to_start_again(tmp_path: Path, data_dir: Path) -> None:
    """Killed at step 2, before its first validation saved anything: `ckpt_path=last` told
    the user to pass the run folder with hydra.run.dir, which they had. Now it says nothing
    was saved and how to start again there, and that command runs."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cli += ["trainer.max_steps=6", "trainer.val_check_interval=4", f"hydra.run.dir={run}"]
    killed = run_cli("train", *cli, "+callbacks.kill._target_=tests.helpers.faults.KillAtStep",
                     "+callbacks.kill.step=2")  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run / "checkpoints").exists() or not list((run / "checkpoints").iterdir())
    out = run_cli("train", *cli, "ckpt_path=last")
    assert_one_line_error(
        out, f"ckpt_path=last: the run in {run} saved no checkpoint", "overwrite_run=true"
    )
    again = run_cli("train", *cli, "overwrite_run=true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 6


@pytest.mark.slow
def test_ddp_run_killed_and_resumed_ends_as_an_uninterrupted_one(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """Two gloo processes, 2 micro-batches per step per rank: every rank's RNG and windows."""
    ddp = ["trainer=ddp_cpu", "global_batch_size=16"]
    reference, run_dir, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    finish(train_command(corpus, data_dir, reference, *ddp), log)
    # Killed while rank 0 stalls after the first save inside a step, so the run resumes between
    # its 2 micro-batches (waiting for such a save by polling raced the next save).
    stalled = tmp_path / "stalled"
    stall = [
        "+callbacks.stall._target_=tests.helpers.sharded_runs.StallAfterMidStepSave",
        f"+callbacks.stall.marker={stalled}",
    ]
    command = train_command(corpus, data_dir, run_dir, *ddp)
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = start([*command, *stall], log)
    while proc.poll() is None and not stalled.exists():
        time.sleep(0.05)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]

    def exact_resume_state() -> dict:
        callbacks = torch.load(last, map_location="cpu", weights_only=True)["callbacks"]
        (state,) = [v for k, v in callbacks.items() if "ExactResume" in k]
        return state

    state = exact_resume_state()
    assert len(state["rng_states"]) == len(state["grads"]) == 2
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference, tolerance=1e-6)


def test_sampler_draws_a_pure_function_of_seed_rank_and_position() -> None:
    sampler = ResumableWindowSampler(n_windows=1000, num_samples=2 * CHUNK + 10, seed=3)
    stream = list(sampler)
    assert len(stream) == len(sampler) and min(stream) >= 0 and max(stream) < 1000
    # Starting anywhere, across chunk boundaries, gives the same windows as getting there.
    for first in (0, 1, CHUNK - 3, CHUNK, 2 * CHUNK + 3):
        assert list(sampler.indices(first, 7)) == stream[first : first + 7]
    # The next epoch starts where this one stopped; inside a Trainer, where training stopped.
    sampler.set_epoch(1)
    assert list(sampler.indices(0, len(sampler) + 5))[len(sampler) :] == list(sampler)[:5]
    trained = ResumableWindowSampler(1000, 20, seed=3, position=lambda: 40)
    assert list(trained) == stream[40:60]
    # Other seeds and other ranks draw other windows.
    for other in ({"seed": 4}, {"rank": 1, "world_size": 2}):
        assert list(ResumableWindowSampler(1000, 50, **{"seed": 3, **other})) != stream[:50]


def test_train_loader_draws_nothing_from_the_global_rng(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "docs", n_docs=1, lines=40)
    dm = TextDataModule(
        TextFilesSource(str(corpus)), {"kind": "char"}, 16, 4, cache_dir=str(tmp_path / "cache")
    )
    dm.prepare_data()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    numpy_state = np.random.get_state()[1].copy()
    first = [batch for _, batch in zip(range(3), dm.train_dataloader(), strict=False)]
    again = [batch for _, batch in zip(range(3), dm.train_dataloader(), strict=False)]
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails(tmp_path: Path) -> None:
    """A save that fails leaves the old file; a temporary file of a killed writer goes, and one
    of a live writer stays (it used to be deleted, and that writer's rename then failed)."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    killed = subprocess.Popen(["true"])
    killed.wait()
    path.with_name(f".{path.name}.tmp-{killed.pid}").write_bytes(b"left by a killed run")
    with subprocess.Popen(["sleep", "60"]) as writer:
        in_progress = path.with_name(f".{path.name}.tmp-{writer.pid}")
        in_progress.write_bytes(b"another process's save in progress")
        with pytest.raises(Exception):  # noqa: B017 - torch.save cannot pickle a lambda
            io.save_checkpoint({"global_step": 2, "bad": lambda: None}, path)
        assert io.load_checkpoint(path)["global_step"] == 1
        assert sorted(p.name for p in path.parent.iterdir()) == sorted(
            ["last.ckpt", in_progress.name]
        )
        writer.kill()
    io.save_checkpoint({"global_step": 3}, path)
    assert io.load_checkpoint(path)["global_step"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["KillInFinalValidation", "KillAtFinalValidationEnd"])
def test_run_killed_in_its_final_validation_resumes_to_the_same_metrics(
    tmp_path: Path, corpus: Path, data_dir: Path, reference: Path, fault: str
) -> None:
    """Killed after training ended, as the final validation starts or once it has sampled: the
    resumed run trains no step, yet its metrics.json has the train metrics and the whole
    training time, and its samples.txt the final weights' block once."""
    run_dir, log = tmp_path / "run", tmp_path / "train.out"
    command = train_command(corpus, data_dir, run_dir)
    kill_there = f"+callbacks.kill._target_=tests.helpers.faults.{fault}"
    assert start([*command, kill_there], log).wait(timeout=600) == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (totals,) = [v for k, v in last["callbacks"].items() if "TrainingTotals" in k]
    assert last["global_step"] == STEPS and totals["train_seconds"] > 0
    finish([*command, "ckpt_path=last"], log)
    # Lightning restores the loop counters as saved before their last increments: the final
    # validation's CSV row says epoch 11 where the uninterrupted run's says 12 (its step is set
    # back to the uninterrupted run's, 57, by lmtrain.callbacks.row_steps).
    assert_same_run(run_dir, reference, final_epoch_apart=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"train/loss", "tokens_seen"} <= metrics.keys()
    assert metrics["time/train_s"] >= totals["train_seconds"]
    # The last validation's samples are of these weights: not written a second time, and
    # drawn as the uninterrupted run drew them (the RNG states go back before it).
    assert samples_steps(run_dir) == samples_steps(reference)
    assert (run_dir / "samples.txt").read_text() == (reference / "samples.txt").read_text()


def test_a_run_resumed_in_mid_step_logs_each_steps_learning_rate_once(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two micro-batches a step, a validation (and its best checkpoint) after the 5th: killed
    there, the run resumes in the middle of step 2. The learning-rate row of that step was
    written before the kill, and the resumed run used to log it again at its first batch."""
    cli = tiny_cli(
        tmp_path,
        data_dir,
        "logger=csv",
        "data.batch_size=4",
        "global_batch_size=8",
        "trainer.max_steps=6",
        "trainer.val_check_interval=5",  # micro-batches: in the middle of step 2
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    kill = "trainer.plugins=[{_target_:tests.helpers.faults.KillAfterSave}]"
    assert run_cli("train", *cli, kill).returncode == -signal.SIGKILL
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with (tmp_path / "run" / "csv" / "metrics.csv").open(newline="") as f:
        lr_steps = [row["step"] for row in csv.DictReader(f) if row.get("train/lr/decay")]
    assert len(lr_steps) == len(set(lr_steps)) == 6, lr_steps


def test_ckpt_path_last_in_another_commands_folder_names_that_command(
    tmp_path: Path, data_dir: Path
) -> None:
    # It said "the run ... saved no checkpoint: start it again with overwrite_run=true", advice
    # to train over an eval's folder.
    run, evaluated = tmp_path / "run", tmp_path / "eval"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cli += ["trainer.max_steps=4", "trainer.val_check_interval=4"]
    assert run_cli("train", *cli, f"hydra.run.dir={run}").returncode == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    done = run_cli(
        "eval", f"ckpt_path={ckpt}", f"hydra.run.dir={evaluated}", f"paths.data_dir={data_dir}"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = run_cli("train", *cli, "ckpt_path=last", f"hydra.run.dir={evaluated}")
    assert_one_line_error(
        out, f"ckpt_path=last: {evaluated} is a folder of lmtrain.eval (eval.log), not a training"
    )


def samples_steps(run_dir: Path) -> list[int]:
    """The step of each block of the run's samples.txt, in file order."""
    return [int(m[1]) for m in BLOCK_HEADER.finditer((run_dir / "samples.txt").read_text())]
