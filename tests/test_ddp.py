"""DDP on two CPU processes (gloo): one run folder, one W&B run, and the val/loss of one process.

The runs are the real CLI. Lightning's launcher re-runs the command for rank 1, and torchrun
starts both ranks itself; `RecordWindows` (added like any callback) writes which windows each
rank read, so the test can see that the data was split between the ranks and not repeated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.strategies import consolidate
from lmtrain.utils.launch import prepare_process
from tests.helpers import ROOT
from tests.helpers.cli import run_cli, run_sweep, tiny_cli, wandb_summary
from tests.helpers.runs import eval_tiny


class RecordWindows(Callback):
    """Writes `<dirpath>/rank<r>.json`: the train windows rank r read, and the val windows of the
    final whole-split validation (`trainer.validate` after fit)."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)
        self.windows: dict[str, list[list[int]]] = {"train": [], "val": []}

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, *_) -> None:
        self.windows["train"] += batch.tolist()

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch, *_
    ) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.windows["val"] += batch.tolist()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            path = self.dirpath / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps(self.windows))


def record_windows(dirpath: Path) -> list[str]:
    return [
        "+callbacks.windows._target_=tests.test_ddp.RecordWindows",
        f"+callbacks.windows.dirpath={dirpath}",
    ]


@pytest.mark.slow
def test_ddp_cpu_run_is_one_run_with_the_val_loss_of_one_process(
    tmp_path: Path, data_dir: Path
) -> None:
    probe = tmp_path / "windows"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir), "trainer=ddp_cpu", *record_windows(probe))
    assert out.returncode == 0, out.stderr[-3000:]

    # One run folder (rank 1 reused rank 0's, microseconds and all), written by rank 0 alone.
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["train"]
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run / "train.log").read_text().count("Preparing data") == 1
    summary = wandb_summary(run)  # exactly one W&B run
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert summary["config"]["trainer"]["devices"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4
    assert metrics["tokens_seen"] == 4 * 2 * 8 * 32  # steps x ranks x batch x block

    # Each rank read its own windows.
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    train = [{tuple(w) for w in rank["train"]} for rank in ranks]
    assert len(train[0] & train[1]) < len(train[0]) / 4  # random draws may rarely coincide
    val = [[tuple(w) for w in rank["val"]] for rank in ranks]
    assert not set(val[0]) & set(val[1])

    # One process on the same weights and data: the same val/loss, over the same windows.
    single = eval_tiny(run / "checkpoints" / "last.ckpt", tmp_path / "eval", data_dir)
    n_windows = single["val/tokens"] / 32
    assert n_windows % 2 == 1  # odd: a sampler that pads would have repeated a window
    assert len(val[0]) + len(val[1]) == n_windows
    assert metrics["val/loss"] == pytest.approx(single["val/loss"], rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("strategy", ["ddp_cpu", "fsdp_cpu"])
def test_a_val_split_of_fewer_windows_than_ranks_validates_as_one_process(
    tmp_path: Path, data_dir: Path, strategy: str
) -> None:
    """One val window on two ranks: Lightning's UnrepeatedDistributedSampler asserted a window
    a rank (an AssertionError, then the other rank's broken collective; red team rev_sweep).
    The rank without one now runs a padding window, weighed 0."""
    corpus = tmp_path / "short.txt"
    corpus.write_text(("To be, or not to be, that is the question. " * 14)[:600])
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, f"trainer={strategy}", "data.batch_size=4", corpus=corpus)
    out = run_cli("train", *cli, "callbacks.text_samples=null", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    last = run / "checkpoints" / "last.ckpt"
    if last.is_dir():  # FSDP's shards
        last = consolidate(last, None)
    single = eval_tiny(last, tmp_path / "eval", data_dir)
    assert single["val/tokens"] == 32  # one window
    assert metrics["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5, abs=1e-5)


@pytest.mark.slow
def test_torchrun_starts_both_ranks_in_one_named_run_folder(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2"]
    args = [*tiny_cli(tmp_path, data_dir), "trainer=ddp_cpu", "callbacks.text_samples=null"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}

    def torchrun_train(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [*torchrun, "-m", "lmtrain.train", *args, *extra]
        return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)

    out = torchrun_train(f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
    assert wandb_summary(run)["state"] == "finished"
    assert (run / "train.log").read_text().count("Preparing data") == 1


class FailOnRank(Callback):
    """Raises on one rank, in the jobs whose learning rate is listed (an interpolation of
    model.optimizer.lr resolves the same in every rank, unlike the Hydra job number)."""

    def __init__(self, rank: int, lr: float, fail_lrs: list[float]) -> None:
        self.rank, self.lr, self.fail_lrs = rank, lr, list(fail_lrs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_rank == self.rank and self.lr in self.fail_lrs:
            raise RuntimeError(f"rank {self.rank} fails")


class KillRankAtStep(Callback):
    """kill -9 of one rank's process once optimizer step `step` has ended: the OOM killer."""

    def __init__(self, rank: int, step: int) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_end(self, trainer: Trainer, *_: object) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_rank_killed_mid_run_is_one_line_on_rank_zero(tmp_path: Path, data_dir: Path) -> None:
    """Red team: kill -9 of rank 1 left rank 0 with 60 lines of gloo traceback ("Connection
    reset by peer") and no word on what happened or how to go on."""
    run = tmp_path / "run"
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "trainer.max_steps=8", f"hydra.run.dir={run}"),
        "trainer=ddp_cpu",
        "+callbacks.kill._target_=tests.test_ddp.KillRankAtStep",
        "+callbacks.kill.rank=1",
        "+callbacks.kill.step=3",
        timeout=300,
    )
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    # Lightning's launcher polls its ranks every 5 s and kills rank 0 (SIGKILL, its own line)
    # when one died: rarely before rank 0's collective fails and it prints lmtrain's line.
    observer = "terminated with code -9. Forcefully terminating all other processes"
    ours = "error: another rank of the run ended while this one waited for it (killed, out of "
    killed = observer in out.stdout + out.stderr and out.returncode in (-9, 128 + 9)
    assert last.startswith(ours) or killed, out.stderr[-3000:]


@pytest.mark.slow
def test_ddp_job_whose_rank_dies_ends_only_itself_in_a_sweep(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    grid = ["trainer=ddp_cpu", "model.optimizer.lr=1e-3,3e-4"]
    fail_on_rank_1 = [  # in the job with lr 1e-3
        "+callbacks.fail._target_=tests.test_ddp.FailOnRank",
        "+callbacks.fail.rank=1",
        "+callbacks.fail.lr=${model.optimizer.lr}",
        "+callbacks.fail.fail_lrs=[1e-3]",
    ]
    # A rank left waiting for its dead peer would hang the sweep: a timeout.
    out = run_sweep(tmp_path, data_dir, sweep, *grid, *fail_on_rank_1, tiny=(), timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]  # after job 1 ran: one job failed
    # Rank 0 saw its peer gone: one line (another_rank_gone), not a traceback, for the job.
    assert "Job 0 (model.optimizer.lr=0.001) failed (exit code 1); the sweep goes on" in out.stdout
    assert "error: 1 of 2 jobs of the sweep under" in out.stderr
    assert "failed (job 0 in 0: " in out.stderr
    assert wandb_summary(sweep / "0")["state"] == "failed"
    assert wandb_summary(sweep / "1")["state"] == "finished"
    assert json.loads((sweep / "1" / "metrics.json").read_text())["trainer/global_step"] == 4


def test_torchrun_without_a_named_run_folder_is_refused(
    compose_cfg, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each torchrun rank is its own Hydra run and would make its own run folder."""
    cfg = compose_cfg("trainer=ddp_cpu")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")  # what torchrun sets in every rank
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exit_:
        prepare_process(cfg)
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: torchrun starts each rank as its own Hydra run, each with its own run folder: "
        "pass hydra.run.dir=<folder> (the same for every rank and node)"
    ]


def test_torchrun_without_a_named_run_folder_leaves_no_run_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    """Refused before Hydra makes the run folder: every rank made one, left behind empty."""
    torchrun = {"TORCHELASTIC_RUN_ID": "test", "WORLD_SIZE": "2"}  # as torchrun sets them
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu"), env=torchrun)
    assert out.returncode == 1, out.stderr[-3000:]
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: torchrun starts each rank as its own Hydra run")
    )
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").rglob("*.log"))


def test_torchrun_with_more_processes_than_the_trainers_devices_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    """Red team: `torchrun --nproc_per_node=2` with trainer=cpu trained two identical runs into
    one folder (samples twice, a resume file with 13 lines for 6 steps), exit code 0."""
    run = tmp_path / "run"
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2"]
    args = [*tiny_cli(tmp_path, data_dir), "trainer=cpu", f"hydra.run.dir={run}"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*torchrun, "-m", "lmtrain.train", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    line = (
        "error: torchrun started 2 processes (WORLD_SIZE) but trainer.devices=1 x "
        "trainer.num_nodes=1 is 1: pass trainer.devices=<its --nproc_per_node>"
    )
    # Each rank refuses before any folder; torchrun may stop the other before it prints.
    assert out.stderr.count(line) >= 1, out.stderr[-3000:]
    assert not run.exists()
