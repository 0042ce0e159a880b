"""Things that make a real run go wrong, stall or slow down on cue, added to it as any callback,
plugin or data source is: `+callbacks.nan._target_=tests.helpers.faults.InjectNonFinite
+callbacks.nan.step=2`, `'trainer.plugins=[{_target_:tests.helpers.faults.PausingCheckpointIO,
...}]'`.

- `InjectNonFinite` turns one batch's loss into NaN (or inf) on one rank, through a forward hook
  on the input embeddings, so the real loss computation meets it.
- `SpoilWeights` turns the weights NaN after a chosen step, before that step's checkpoint.
- `Sabotage` makes chosen jobs of a sweep fail at their first step or diverge (NaN weights).
- `Pace` tells a test when training is under way (a file per rank holding its pid) and then
  slows each step, so that a signal or a kill the test sends lands mid-training.
- `SignalBeforeValidation` sends a signal to its own process during the optimizer step that a
  validation follows, so that a preemption stops exactly there.
- `SlurmSignalsAtSteps` plays a SLURM job's auto-requeue signal, then its preemption.
- `KillInFinalValidation` sends SIGKILL to its own process once training has ended, as the
  final validation on the whole val split starts.
- `KillAfterStepSave` sends SIGKILL to its own process right after it saves last.ckpt at a
  given step.
- `PausingCheckpointIO` stops a run in the middle of a save of last.ckpt, between the write of
  the temporary file and its rename, for the test to kill it there.
- `mounted_tmpfs` (tests/helpers/tmpfs.py) mounts a tmpfs (read-only, or small) for a test:
  directly as root, else in a user + mount namespace.
- `drop_root_file_access` makes a child process (as `preexec_fn`) check file modes even as
  root, so that a read-only folder is read-only to it.
- `SlowTextFiles` reads real files at a throttled pace, so that a token-cache build stays under
  way while a test acts; `prepare_in_child` runs such a build in another process.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.data import TextDataModule
from lmtrain.data.corpus import Piece
from lmtrain.data.sources import TextFilesSource
from lmtrain.lightning_compat import validation_follows
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from tests.helpers.tmpfs import mounted_tmpfs as mounted_tmpfs  # tests import it from here


class InjectNonFinite(Callback):
    """Multiplies the embedding output by `value` for micro-batch `micro_batch` (0-based) of
    optimizer step `step` (1-based: the step that global_step reaches when it completes), on
    `rank` (null: all). `weights`: multiply the embedding weights instead, before that
    micro-batch, so the loss is NaN because the weights are."""

    def __init__(
        self,
        step: int,
        rank: int | None = None,
        value: float = float("nan"),
        micro_batch: int = 0,
        weights: bool = False,
    ) -> None:
        self.step, self.rank, self.value, self.weights = step, rank, float(value), weights
        self.micro_batch, self.seen = micro_batch, 0
        self.fired = False

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.fired or trainer.global_step + 1 != self.step:
            return
        self.seen += 1
        if self.seen <= self.micro_batch:
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        self.fired = True
        embeddings = pl_module.model.get_input_embeddings()
        if self.weights:  # an earlier update that overflowed, as it were
            with torch.no_grad():
                embeddings.weight.mul_(self.value)
            return

        def poison(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            handle.remove()  # this one forward only
            return output * self.value

        handle = embeddings.register_forward_hook(poison)


class SpoilWeights(Callback):
    """Turns the embedding weights NaN right after optimizer step `step` (1-based), before
    any checkpoint of that step is saved (Lightning runs checkpoint callbacks last): an update
    that overflowed while its loss was finite."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.get_input_embeddings().weight.mul_(math.nan)


class Sabotage(Callback):
    """Makes chosen jobs of a sweep fail (an exception at the first step) or diverge (NaN weights).

    `job` is the Hydra job number (`${hydra:job.num}`), so which job misbehaves does not depend
    on what the sweeper samples.
    """

    def __init__(self, job: int, fail_jobs: list[int] = (), nan_jobs: list[int] = ()) -> None:
        self.job, self.fail_jobs, self.nan_jobs = job, list(fail_jobs), list(nan_jobs)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.job in self.fail_jobs:
            raise RuntimeError(f"sabotaged job {self.job}")
        if self.job in self.nan_jobs:
            with torch.no_grad():
                for param in pl_module.parameters():
                    param.fill_(math.nan)


class Pace(Callback):
    """After optimizer step `after_step`, writes `<dirpath>/rank<r>.pid` (this process's pid)
    and from then on sleeps `seconds` after each step (a long sleep: the run stalls there)."""

    def __init__(self, dirpath: str, after_step: int = 2, seconds: float = 0.2) -> None:
        self.dirpath, self.after_step, self.seconds = Path(dirpath), after_step, seconds

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step < self.after_step:
            return
        pid_file = self.dirpath / f"rank{trainer.global_rank}.pid"
        if not pid_file.exists():
            self.dirpath.mkdir(parents=True, exist_ok=True)
            write_marker(pid_file, str(os.getpid()))
        time.sleep(self.seconds)


class SignalBeforeValidation(Callback):
    """Sends `signal` (a name) to this process before the optimizer step of the `nth` step that a
    validation follows: the preemption callback then stops at that step, before the validation."""

    def __init__(self, signal: str = "SIGUSR1", nth: int = 1) -> None:
        self.signal, self.nth, self.seen = signal, nth, 0

    def on_before_optimizer_step(self, trainer: Trainer, *args: Any) -> None:
        if validation_follows(trainer):  # the loop's test reads this micro-batch's counters
            self.seen += 1
            if self.seen == self.nth:
                os.kill(os.getpid(), signal.Signals[self.signal])


class SlurmSignalsAtSteps(Callback):
    """On a SLURM job's first attempt (no SLURM_RESTART_COUNT), sends this process SIGUSR1 once
    step `usr1_at` has ended (Lightning's auto-requeue saves `hpc_ckpt_1.ckpt` and calls
    `scontrol requeue`), then SIGTERM once step `term_at` has (SLURM's preemption of the job)."""

    def __init__(self, usr1_at: int, term_at: int) -> None:
        self.at = {usr1_at: signal.SIGUSR1, term_at: signal.SIGTERM}

    def on_train_batch_end(self, trainer: Trainer, *_: Any) -> None:
        if os.environ.get("SLURM_RESTART_COUNT", "0") == "0" and trainer.global_step in self.at:
            os.kill(os.getpid(), self.at.pop(trainer.global_step))


class KillAtStep(Callback):
    """kill -9 of this process once optimizer step `step` has ended."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *_: Any) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class KillInFinalValidation(Callback):
    """kill -9 of this process at the start of `trainer.validate` after `trainer.fit` ended."""

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # trainer.validate, not one inside fit
            os.kill(os.getpid(), signal.SIGKILL)


class KillAtFinalValidationEnd(Callback):
    """kill -9 of this process as `trainer.validate` after `trainer.fit` ends, once the callbacks
    before this one (text samples) have done their part."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            os.kill(os.getpid(), signal.SIGKILL)


def write_marker(marker: Path, text: str) -> None:
    """Writes `marker` under a temporary name and renames it: a test that polls for the file
    never reads it empty (a plain write_text is seen between its open and its write)."""
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(marker)


class PauseBeforeReplace:
    """Mixin for a CheckpointIO or a strategy that writes a checkpoint under a temporary name:
    on the `pause_at`-th save of `last.ckpt`, once it is written in full, writes `marker`
    (holding the temporary path) and sleeps before the rename, for the test to kill -9 the run
    there."""

    marker: Path
    pause_at: int
    saves: int = 0

    def before_replace(self, tmp: Path, target: Path) -> None:
        if target.name != "last.ckpt":
            return
        self.saves += 1
        if self.saves == self.pause_at:
            write_marker(self.marker, str(tmp))
            time.sleep(600)  # the test kills the run here


class PausingCheckpointIO(PauseBeforeReplace, AtomicCheckpointIO):
    """`PauseBeforeReplace` on our atomic CheckpointIO: the moment a non-atomic save would leave
    a half-written `last.ckpt`."""

    def __init__(self, marker: str, pause_at: int = 2) -> None:
        super().__init__()
        self.marker, self.pause_at = Path(marker), pause_at


class KillAfterSave(AtomicCheckpointIO):
    """Our atomic CheckpointIO that kill -9s its process right after the `nth` save of a file
    whose name starts with `prefix` (`best-`: before the last.ckpt that follows it)."""

    def __init__(self, prefix: str = "best-", nth: int = 1) -> None:
        super().__init__()
        self.prefix, self.nth, self.seen = prefix, nth, 0

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        if Path(path).name.startswith(self.prefix):
            self.seen += 1
            if self.seen == self.nth:
                os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(600)


class KillAfterStepSave(AtomicCheckpointIO):
    """Our atomic CheckpointIO that kill -9s its process right after it saves last.ckpt at
    `step`, a step whose row the loggers write: Lightning sent that row after a save made at
    the step's end, and a kill right there lost it."""

    def __init__(self, step: int = 15) -> None:
        super().__init__()
        self.step = step

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        super().save_checkpoint(checkpoint, path, storage_options)
        if Path(path).name.startswith("last") and checkpoint["global_step"] == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)


class SlowTextFiles(TextFilesSource):
    """Real files read at a throttled pace, so that a build stays under way while a test acts.

    The delay is not a setting: the fingerprint is the same as with no delay.
    """

    def __init__(self, path: str, delay_s: float = 0.0) -> None:
        super().__init__(path, val_fraction=0.25)
        self.delay_s = delay_s

    def settings(self) -> dict[str, Any]:
        """Its own, so that `delay_s` (speed, not documents) stays out of the fingerprint."""
        return super().settings()

    def documents(self) -> Iterator[Piece]:
        for piece in super().documents():
            time.sleep(self.delay_s)
            yield piece


def slow_datamodule(
    corpus: Path, cache_dir: Path, delay_s: float = 0.0, workers: int = 1
) -> TextDataModule:
    """Char tokenizer and 1 kB chunks: token files grow from the first documents."""
    return TextDataModule(
        SlowTextFiles(str(corpus), delay_s),
        {"kind": "char"},
        block_size=8,
        batch_size=2,
        cache_dir=str(cache_dir),
        prepare_workers=workers,
        prepare_chunk_mb=0.001,
    )


def prepare_in_child(
    corpus: Path, cache_dir: Path, delay_s: float, log_path: Path, workers: int, start: Any
) -> None:
    """A process's whole preparation: logs to `log_path`, cache path to `log_path`.path."""
    handler = logging.FileHandler(log_path)
    logging.getLogger("lmtrain").addHandler(handler)
    logging.getLogger("lmtrain").setLevel(logging.INFO)
    dm = slow_datamodule(corpus, cache_dir, delay_s, workers)
    if start is not None:
        start.wait()
    dm.prepare_data()
    log_path.with_suffix(".path").write_text(str(dm.cache_path))


def drop_root_file_access() -> None:
    """Remove CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set before exec: the
    new program then checks file modes like any process (prctl PR_CAPBSET_DROP)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


# Linux prctl and capability numbers (linux/prctl.h, linux/capability.h).
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2
