"""SIGTERM during the final validation (`trainer.validate` after `trainer.fit`) of a DDP run.

Lightning's SIGTERM handler broadcasts from inside the signal handler: with the signal on one
rank only, that broadcast paired with nothing on the other rank, and both waited out the
collective timeout (300 s on ddp_cpu, half an hour on GPUs) before tracebacks. The run must
stop on every rank within seconds, with the one `error:` line of a SIGTERM outside the training
steps, and `ckpt_path=last` must run the final validation again and finish.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import tiny_cli, wandb_records, wandb_summary

MAX_STEPS = 4


class TermInFinalValidation(Callback):
    """SIGTERM to this process on rank `rank` only, at the end of val batch `batch` of the
    validation after training; writes the time it did so to `marker`."""

    def __init__(self, marker: str, rank: int = 1, batch: int = 0) -> None:
        self.marker, self.rank, self.batch = Path(marker), rank, batch

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: object, batch: object, idx: int
    ) -> None:
        if trainer.state.fn != TrainerFn.VALIDATING or trainer.global_rank != self.rank:
            return
        if idx == self.batch and not self.marker.exists():
            self.marker.write_text(str(time.time()))
            os.kill(os.getpid(), signal.SIGTERM)


def train(cli: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m lmtrain.train` in its own process group (rank 1 with it): killed whole if it
    outlives `timeout`, which fails the test."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    env["OMP_NUM_THREADS"] = "1"  # two ranks on two cores
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtrain.train", *cli],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the run still ran after {timeout:.0f} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


class TermAtBatch(Callback):
    """SIGTERM to this process at the end of val batch `batch`; records the SIGTERM handler
    each val batch found."""

    def __init__(self, batch: int | None) -> None:
        self.batch, self.handlers = batch, []

    def on_validation_batch_end(self, trainer: Trainer, *args: object) -> None:
        self.handlers.append(signal.getsignal(signal.SIGTERM))
        if len(self.handlers) - 1 == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("batch", [1, None], ids=["signal", "no_signal"])
def test_validate_replaces_lightnings_sigterm_handler_and_puts_the_one_before_back(
    tmp_path: Path, batch: int | None
) -> None:
    """In one process: the callback's handler during `trainer.validate` (Lightning's broadcasts
    under DDP), the stop at the next val batch, and the handler found before in place after."""
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lmtrain.callbacks.preemption import PreemptionCheckpoint
    from lmtrain.errors import Preempted

    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        mine = signal.getsignal(signal.SIGTERM)
        callback, probe = PreemptionCheckpoint(), TermAtBatch(batch)
        trainer = Trainer(
            accelerator="cpu",
            callbacks=[callback, probe],
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=5,
            default_root_dir=tmp_path,
        )
        if batch is None:
            trainer.validate(BoringModel(), verbose=False)
            assert len(probe.handlers) == 5
        else:
            with pytest.raises(Preempted) as stopped:
                trainer.validate(BoringModel(), verbose=False)
            assert stopped.value.code == 128 + signal.SIGTERM and seen == [signal.SIGTERM]
            assert stopped.value.message == (
                "terminated by SIGTERM outside the training steps: nothing was saved after the "
                f"last checkpoint; resume with ckpt_path=last hydra.run.dir={tmp_path}"
            )
            # The callback (before the probe) stopped at the end of the next batch.
            assert len(probe.handlers) == batch + 1
        assert all(h == callback._handle for h in probe.handlers)
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0], ids=["rank1", "rank0"])
def test_ddp_sigterm_to_one_rank_in_the_final_validation_stops_every_rank_at_once(
    tmp_path: Path, data_dir: Path, rank: int
) -> None:
    run, marker = tmp_path / "run", tmp_path / "signalled"
    cli = [
        *tiny_cli(tmp_path, data_dir, f"trainer.max_steps={MAX_STEPS}"),  # W&B, offline
        "trainer=ddp_cpu",
        "callbacks.text_samples=null",
        f"hydra.run.dir={run}",
    ]
    term = [
        f"+callbacks.term._target_={__name__}.TermInFinalValidation",
        f"+callbacks.term.marker={marker}",
        f"+callbacks.term.rank={rank}",
    ]
    # Its output ends once both ranks have closed it: rank 1 holds it too.
    out = train([*cli, *term], timeout=150)
    stopped_after = time.time() - float(marker.read_text())
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    assert_one_line_error(out)
    assert out.stderr.strip().splitlines()[-1] == (
        "error: terminated by SIGTERM outside the training steps: nothing was saved after the "
        f"last checkpoint; resume with ckpt_path=last hydra.run.dir={run}"
    )
    assert stopped_after < 30, f"the ranks stopped {stopped_after:.0f} s after the signal"
    assert not (run / "metrics.json").exists()  # the final validation did not end
    # Rank 0 finished its W&B run before rank 1 left (Lightning's launcher kills rank 0 when
    # rank 1 exits non-zero first), and marked it as preempting.
    summary = wandb_summary(run)
    assert summary["state"] == "failed" and summary["exit_code"] == 128 + signal.SIGTERM
    assert "preempting" in [record["type"] for record in wandb_records(run)]

    if rank == 0:
        return  # the resume is the same whichever rank got the signal
    resumed = train([*cli, "ckpt_path=last"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())  # the final validation's
    assert metrics["trainer/global_step"] == MAX_STEPS
    assert {"val/loss", "train/loss"} <= metrics.keys()
