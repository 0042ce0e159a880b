"""A run folder belongs to one live run: a second run into a folder that holds checkpoints is
refused unless it resumes them or says `overwrite_run=true`, and a second live run is refused
by the first one's lock. The runs are real (in-process `train`, the CLI, torchrun) and nothing
of the first run may change."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.train import train
from lmtrain.utils import locks, run_folder, task
from lmtrain.utils.run_folder import claim_run_folder
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY, compose
from tests.helpers.corpora import one_file_corpus


def files_of(run: Path) -> dict[str, str]:
    """sha256 of every file under `run` but the lock file, whose content names its holder."""
    return tree_digest(run, skip=(run_folder.LOCK_FILE,))


def step_of(run: Path) -> int:
    last = run / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def test_second_run_into_a_folder_with_checkpoints_is_refused_unless_it_resumes_or_overwrites(
    compose_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    tiny = [
        "data=text_files",
        f"data.source.path={one_file_corpus(tmp_path / 'corpus')}",
        "data.tokenizer.kind=char",
        "logger=none",
        "callbacks.text_samples=null",
    ]
    train(compose_cfg(*tiny))
    first = files_of(run)
    assert step_of(run) == 4
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        train(compose_cfg(*tiny, "trainer.max_steps=6"))
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: hydra.run.dir={run.resolve()} already holds checkpoints of another run "
        f"(checkpoints/last.ckpt, {next(run.glob('checkpoints/best-*.ckpt')).relative_to(run)}): "
        "resume it with ckpt_path=last, pass another hydra.run.dir, or overwrite_run=true to "
        "replace it"
    ]
    assert files_of(run) == first  # last.ckpt and everything else byte for byte

    # The two ways on that the message names.
    assert train(compose_cfg(*tiny, "ckpt_path=last", "trainer.max_steps=6"))
    assert step_of(run) == 6
    assert train(compose_cfg(*tiny, "overwrite_run=true", "trainer.max_steps=2"))
    assert step_of(run) == 2


def test_a_checkpoint_dirpath_holding_another_runs_checkpoints_is_refused(
    compose_cfg, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`callbacks.model_checkpoint.dirpath` outside the run folder is claimed too: pointed at
    another run's checkpoints/, a new run would replace its last.ckpt and best checkpoint."""
    tiny = ["data=text_files", f"data.source.path={one_file_corpus(tmp_path / 'corpus')}"]
    tiny += ["data.tokenizer.kind=char", "logger=none", "callbacks.text_samples=null"]
    train(compose_cfg(*tiny))
    first = files_of(tmp_path / "run")
    other = compose("train", tmp_path / "other", data_dir, *TINY, *tiny)
    other.callbacks.model_checkpoint.dirpath = str(tmp_path / "run" / "checkpoints")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train(other)
    assert exit_.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"error: callbacks.model_checkpoint.dirpath={(tmp_path / 'run' / 'checkpoints').resolve()} "
        "holds another run's checkpoints (best-step="
    )
    assert files_of(tmp_path / "run") == first


def test_a_checkpoint_dirpath_a_live_run_holds_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """Two runs started together with one dirpath outside their folders both found it empty,
    then replaced each other's last.ckpt: rank 0 locks it for the run. Here this test process
    holds it, as a run that has just started does."""
    shared = tmp_path / "shared_checkpoints"
    shared.mkdir()
    cli = tiny_cli(tmp_path, data_dir, f"callbacks.model_checkpoint.dirpath={shared}")
    release = locks.acquire(shared / ".lock")
    try:
        out = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'refused'}")
        key = f"callbacks.model_checkpoint.dirpath={shared.resolve()}"
        assert_one_line_error(out, f"{key} is in use by a live run (pid {os.getpid()} on host")
        assert sorted(p.name for p in shared.iterdir()) == [".lock"]
    finally:
        release()
    out = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (shared / "last.ckpt").is_file()
    assert "exists and is not empty" not in out.stderr  # Lightning's warning, of the lock alone


def test_a_run_called_from_python_lets_its_folders_go_when_it_returns_or_raises(
    compose_cfg, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A notebook's `train(cfg)` held its run folder and an outside checkpoint dirpath until the
    process exited: a command-line run into them was refused as "in use by a live run" (the
    notebook's pid), though the notebook's run had ended. The CLI run is a separate process."""
    corpus, outside = one_file_corpus(tmp_path / "corpus"), tmp_path / "outside"
    tiny = ["data=text_files", f"data.source.path={corpus}", "data.tokenizer.kind=char"]
    tiny += ["logger=none", "callbacks.text_samples=null"]
    tiny.append(f"callbacks.model_checkpoint.dirpath={outside}")
    assert train(compose_cfg(*tiny))  # returns
    with pytest.raises(SystemExit):  # raises, once both folders were claimed
        train(compose_cfg(*tiny, "trainer.max_steps=6"))
    assert "holds another run's checkpoints" in capsys.readouterr().err

    cli = tiny_cli(tmp_path, data_dir, *tiny[3:], corpus=corpus)
    out = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}", "overwrite_run=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "in use by a live run" not in out.stderr
    assert torch.load(outside / "last.ckpt", weights_only=True)["global_step"] == 4


def test_the_run_folder_stays_locked_until_its_wandb_run_has_finished(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """W&B writes its run's files into the run folder as it finishes: the lock was let go
    first, and a resume started in that window took over a folder whose W&B run was closing.
    Whether the lock is held is asked from a second process as W&B's finish starts."""
    run, held = tmp_path / "run", []
    finish = task.finish_wandb

    def finishing(exit_code: int) -> None:
        lock = str(run / ".lock")
        ask = "from pathlib import Path; from lmtrain.utils import locks; "
        ask += f"print(locks.held_elsewhere(Path({lock!r})))"
        out = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True)
        held.append(out.stdout.strip())
        finish(exit_code)

    monkeypatch.setattr(task, "finish_wandb", finishing)
    tiny = ["data=text_files", f"data.source.path={one_file_corpus(tmp_path / 'corpus')}"]
    assert train(compose_cfg(*tiny, "data.tokenizer.kind=char", "logger=wandb"))
    assert held == ["True"]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))


def test_a_refused_command_line_run_leaves_the_first_runs_hydra_record_alone(
    tmp_path: Path, data_dir: Path
) -> None:
    """Hydra writes `.hydra/` before the task starts: the claim runs before that (a Hydra
    callback), so the first run's record of its config survives a refused second command."""
    run = tmp_path / "run"
    first = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}"))
    assert first.returncode == 0, first.stderr[-2000:]
    before = files_of(run)
    second = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", "seed=7"))
    assert_one_line_error(second, "already holds checkpoints of another run")
    assert files_of(run) == before  # .hydra/config.yaml and overrides.yaml included

    # A run without checkpoints (callbacks.model_checkpoint=null) is still a run.
    no_checkpoints = tmp_path / "no_checkpoints"
    shutil.copytree(run, no_checkpoints, ignore=shutil.ignore_patterns("checkpoints"))
    before = files_of(no_checkpoints)
    third = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={no_checkpoints}"))
    line = assert_one_line_error(
        third,
        f"hydra.run.dir={no_checkpoints.resolve()} already holds another run's metrics.json, "
        "samples.txt: pass another hydra.run.dir, or overwrite_run=true",
    )
    assert "resume" not in line  # nothing to resume from: resume= would only fail next
    assert files_of(no_checkpoints) == before


@pytest.mark.slow
def test_second_live_run_in_a_folder_is_refused_while_the_first_goes_on(
    tmp_path: Path, data_dir: Path
) -> None:
    run, pids = tmp_path / "run", tmp_path / "pids"
    cli = [*tiny_cli(tmp_path, data_dir, "logger=none"), f"hydra.run.dir={run}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    pace = ["+callbacks.pace._target_=tests.helpers.faults.Pace", f"+callbacks.pace.dirpath={pids}"]
    pace.append("+callbacks.pace.seconds=1")  # slow steps leave the CPU to the second run
    first = subprocess.Popen(
        [sys.executable, "-m", "lmtrain.train", *cli, *pace, "trainer.max_steps=100000"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (pids / "rank0.pid").exists():  # past step 2: training, lock held
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.2)
        second = run_cli("train", *cli)
        in_use = (
            f"hydra.run.dir={run.resolve()} is in use by a live run (pid {first.pid} on host "
            f"{socket.gethostname()}): wait for it or pass another hydra.run.dir"
        )
        assert_one_line_error(second, in_use)
        assert second.returncode == 1
        # Nor may a resume join it (what ckpt_path=last claims, without another CLI start).
        with pytest.raises(LMTrainError) as refused:
            claim_run_folder(run, resuming=True, overwrite=False)
        assert str(refused.value) == in_use
        assert first.poll() is None  # still training
    finally:
        first.kill()
        first.communicate()


@pytest.mark.slow
def test_torchrun_twice_into_one_folder_refuses_the_second_and_changes_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    """README's torchrun command run twice, on two CPU processes."""
    run = tmp_path / "run"
    args = [*tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}

    def torchrun_train() -> subprocess.CompletedProcess[str]:
        with socket.socket() as s:  # a free port: other tests may run torchrun at the same time
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        torchrun = Path(sys.executable).with_name("torchrun")
        command = [str(torchrun), "--nproc_per_node=2", f"--master_port={port}", "-m"]
        command += ["lmtrain.train", *args, "trainer=ddp_cpu", f"hydra.run.dir={run}"]
        # A rank left waiting for the refused rank 0 would hang here: torchrun must stop it.
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )

    first = torchrun_train()
    assert first.returncode == 0, first.stderr[-3000:]
    before = files_of(run)
    assert step_of(run) == 4

    second = torchrun_train()
    assert second.returncode != 0
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: hydra.run.dir={run.resolve()} already holds checkpoints of another run "
        f"(checkpoints/last.ckpt, {next(run.glob('checkpoints/best-*.ckpt')).relative_to(run)}): "
        "resume it with ckpt_path=last, pass another hydra.run.dir, or overwrite_run=true to "
        "replace it"
    ]
    assert files_of(run) == before


def test_claim_uses_the_owner_file_where_posix_locks_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The O_EXCL owner file (`lmtrain.utils.locks`) as the run folder's lock: refused while its
    owner lives, taken over once it was killed, removed when the folder is let go.

    No file system without POSIX locks exists on this machine, so lockf's refusal is simulated;
    the owner file itself is real and held by a real process (the lock alone: test_locks.py)."""

    def no_posix_locks(*_: object) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locks.fcntl, "lockf", no_posix_locks)
    folder = tmp_path / "run"
    folder.mkdir()
    owner = folder / f"{run_folder.LOCK_FILE}{locks.OWNER_SUFFIX}"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from lmtrain.utils import locks\n"
            f"locks._acquire_owner_file(Path({str(owner)!r}), False)\n"
            "print('held', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LMTrainError, match=rf"in use by a live run \(pid {holder.pid} on host"):
            claim_run_folder(folder, resuming=False, overwrite=False)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL left the file behind: its owner is dead on this host, so it is taken over.
    assert owner.read_text().split()[0] == str(holder.pid)
    claim_run_folder(folder, resuming=False, overwrite=False)
    assert owner.read_text().split() == [str(os.getpid()), socket.gethostname()]
    claim_run_folder(tmp_path / "another", resuming=False, overwrite=False)  # releases the first
    assert not owner.exists()
