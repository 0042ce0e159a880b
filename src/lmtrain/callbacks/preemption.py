"""`PreemptionCheckpoint`: on SIGTERM, SIGUSR1 or SIGUSR2, finish the step, save, and exit.

Clusters warn a job before they take its machine back (SLURM, Kubernetes and spot instances
send SIGTERM; SLURM's `--signal` usually SIGUSR1; submitit's time limit and preemption notice
is SIGUSR2, after which the job is requeued: see lmtrain.utils.requeue). The signal handler
only notes the signal. After the optimizer step in flight, the callback saves
`checkpoints/last.ckpt` (what `ckpt_path=last` resumes from), marks the W&B run as preempting and
raises `Preempted`: the task wrapper prints one `error:` line and the process exits with 128 +
the signal's number (143 for SIGTERM).

Under DDP a signal may reach one rank only: every optimizer step the ranks agree, through the
strategy, on the signal any of them got (the highest number), so they all save and stop at the same
step and exit with the same code. That is one all-reduce of one number per step: 1.1 ms with gloo
between two CPU processes on this project's busy 2-core machine (a few % of a tiny model's step;
`check_every_n_steps` spaces it out), on GPUs a one-element NCCL all-reduce beside the gradients'
(Lightning itself already syncs a flag to the host every DDP step).
A single process only reads a Python attribute.

Lightning installs its own SIGTERM handler for `fit` and `validate`. This callback replaces it
while training runs (Lightning's would also raise a SIGTERMException at the next step, and under
DDP it broadcasts from inside the handler, which pairs with the wrong collective when only one
rank got the signal: both ranks then waited out the collective timeout); any other handler
installed before (a user's, submitit's logging) is still called, except submitit's requeue,
which runs after the save.
The signals in `trainer.validate` (train.py's final validation after `fit`) are handled so too:
the ranks agree on one after each val batch that all of them run, and stop on every rank with
"terminated by SIGTERM outside the training steps" (exit 143; SIGUSR1 138). Nothing is saved:
the last.ckpt of training's end is there, and `ckpt_path=last` runs that validation again.
With Lightning's SLURM auto-requeue active, its requeue signal (SIGUSR1 by default) is left to
Lightning, which saves `hpc_ckpt_*.ckpt` and requeues the job.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.errors import LMTrainError, Preempted
from lmtrain.lightning_compat import (
    cluster_environment,
    log_finished_train_step,
    mark_validation_pending,
    validation_follows,
)
from lmtrain.lightning_compat.pending_validation import (
    end_fit_at,
    enter_fit_at_max_steps,
    validation_pending,
)
from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.utils.requeue import is_submitit_requeue_handler
from lmtrain.utils.resume_hints import resume_hint

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any] | int | None


class PreemptionCheckpoint(Callback):
    def __init__(
        self,
        signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGUSR2"),
        check_every_n_steps: int = 1,
    ) -> None:
        """`signals` are names (SIGTERM, SIGUSR1, SIGUSR2, SIGINT...); `check_every_n_steps`
        spaces out the check (and, under DDP, its all-reduce); the stop then waits for the next
        check."""
        if isinstance(signals, str):  # `signals=SIGTERM`, no brackets: read letter by letter
            raise LMTrainError(
                f"callbacks.preemption.signals={signals!r} is not a list: pass '[{signals}]'"
            )
        try:
            self.signals = [signal.Signals[name] for name in signals]
        except KeyError as err:
            raise LMTrainError(
                f"callbacks.preemption.signals has an unknown signal {err}: use names such as "
                "SIGTERM or SIGUSR1"
            ) from None
        # No process may catch these: installing a handler fails once training has started.
        uncatchable = [s.name for s in self.signals if s in (signal.SIGKILL, signal.SIGSTOP)]
        if uncatchable:
            raise LMTrainError(
                f"callbacks.preemption.signals has {uncatchable[0]}, which no process can catch: "
                "use signals a scheduler sends first, such as SIGTERM or SIGUSR1"
            )
        if check_every_n_steps < 1:
            raise LMTrainError(
                f"callbacks.preemption.check_every_n_steps={check_every_n_steps}: use 1 or more"
            )
        self.check_every_n_steps = check_every_n_steps
        self.received: signal.Signals | None = None
        self._previous: dict[signal.Signals, Handler] = {}
        self._last_checked_step = -1
        self._validation_pending = False
        self._val_checks_left = 0  # trainer.validate: the val batches still to check after
        self._pending_step: int | None = None  # a restored save's step, its validation pending
        self._fit_started = False
        self._max_steps: int | None = None  # raised to enter that validation at max_steps

    # -- signal handlers ------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_checked_step, self.received = trainer.global_step, None
        self._install(trainer, self.signals)

    def _install(self, trainer: Trainer, signals: Sequence[signal.Signals]) -> None:
        if threading.current_thread() is not threading.main_thread():
            log.warning("Not in the main thread: preemption signals are not handled")
            return
        # A signal in fit's last validation (no step after it checked it) stops the final one.
        lightning_requeue = requeue_signal(trainer)
        for signum in signals:
            if signum == lightning_requeue:
                log.info("%s is Lightning's SLURM requeue signal: left to it", signum.name)
                continue
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Note the signal (the stop waits for the step in flight), then call the handlers that
        were there before, less Lightning's own SIGTERM notifier."""
        self.received = self.received or signal.Signals(signum)
        for handler in chained_handlers(self._previous.get(signal.Signals(signum))):
            handler(signum, frame)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, err: BaseException
    ) -> None:
        self._val_checks_left = 0
        self._end_fit_at_max_steps(trainer)
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._previous = {}  # ours stays until Lightning's teardown, next (see teardown)
        else:
            self._restore()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Called after Lightning's own teardown, which put back the signal handlers it found as
        the trainer started: `validate`'s SIGTERM handler is left to it (restored at
        on_validation_end, Lightning's handler would be back until then, and a signal in those
        moments would broadcast under DDP)."""
        self._previous = {}
        self._val_checks_left = 0
        self._end_fit_at_max_steps(trainer)
        self._pending_step, self._fit_started = None, False

    # -- the stop -------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """After each optimizer step (every `check_every_n_steps`): stop if any rank got a
        signal. Micro-batches of gradient accumulation leave global_step alone and are passed.

        The step's metrics go to the loggers before the stop: Lightning logs them only after
        every callback's on_train_batch_end, and the resume starts at the next step, so without
        this each preemption would drop one row from every logger."""
        step = trainer.global_step
        if step == self._last_checked_step or step % self.check_every_n_steps:
            return
        self._last_checked_step = step
        signum = self.agreed_signal(trainer)
        if signum is None:
            return
        name = signum.name if signum == self.received else f"{signum.name} on another rank"
        path = last_checkpoint_path(trainer)
        self._validation_pending = validation_follows(trainer)
        try:
            trainer.save_checkpoint(path, False)  # not weights only: a whole one, to resume from
        finally:
            self._validation_pending = False
        log_finished_train_step(trainer)  # after the save: the state every other save has
        mark_preempting(trainer)
        log.info("Preempted by %s at step %d: saved %s", name, step, path)
        hint = resume_hint(path, trainer.default_root_dir)
        message = f"preempted by {name} at step {step}: saved {path}; {hint}"
        raise Preempted(signum, message)

    # -- trainer.validate: the final validation ------------------------------------------------
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """`trainer.validate` (not a validation inside `fit`): the signals (SIGUSR1 killed the
        process with no line), SIGTERM in place of Lightning's handler, checked after each val
        batch that every rank runs (a rank may have one batch more than another: each reads its
        own windows, none repeated). In `fit`: the validation a resumed stop at max_steps left
        pending has started, and `max_steps` is put back."""
        if not trainer.sanity_checking:
            self._end_fit_at_max_steps(trainer)
        if trainer.state.fn != TrainerFn.VALIDATING:
            return
        self._install(trainer, self.signals)  # Lightning's teardown puts back what it found
        self._val_checks_left = batches_every_rank_runs(trainer)

    def on_validation_batch_end(self, trainer: Trainer, *args: Any) -> None:
        """Stop on every rank if any rank got a signal: `Preempted`, so that rank 0 prints the
        line and the ranks leave together, as after a stop in training."""
        if self._val_checks_left <= 0:
            return
        self._val_checks_left -= 1
        signum = self.agreed_signal(trainer)
        if signum is None:
            return
        self._val_checks_left = 0
        name = signum.name if signum == self.received else f"{signum.name} on another rank"
        mark_preempting(trainer)
        log.info("Terminated by %s in trainer.validate: nothing saved", name)
        hint = resume_hint(last_checkpoint_path(trainer), trainer.default_root_dir)
        message = (
            f"terminated by {signum.name} outside the training steps: nothing was saved after the "
            f"last checkpoint; {hint}"
        )
        raise Preempted(signum, message)

    # -- the resume of a stop at max_steps: into the validation it left pending ---------------
    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        pending = trainer.state.fn == TrainerFn.FITTING and validation_pending(checkpoint)
        self._pending_step = checkpoint.get("global_step") if pending else None
        if self._fit_started:  # restored after the strategy's setup (FSDP): on_fit_start passed
            self._enter_pending_validation(trainer)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the optimizers and their schedules were sized to `max_steps`, before the fit
        loop decides it has nothing to run: a stop at the last step resumes into its validation
        (see lightning_compat.pending_validation)."""
        self._fit_started = True
        self._enter_pending_validation(trainer)

    def _enter_pending_validation(self, trainer: Trainer) -> None:
        if self._pending_step is not None:
            self._max_steps = enter_fit_at_max_steps(trainer, self._pending_step)
            self._pending_step = None

    def _end_fit_at_max_steps(self, trainer: Trainer) -> None:
        if self._max_steps is not None:
            end_fit_at(trainer, self._max_steps)
            self._max_steps = None

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """The stop's own save, at a step a validation follows: the resumed run starts with
        that validation (its row, samples and best-checkpoint ranking are not lost)."""
        if self._validation_pending:
            mark_validation_pending(checkpoint)

    def agreed_signal(self, trainer: Trainer) -> signal.Signals | None:
        """The signal every rank stops for, or None: under DDP the highest signal number any
        rank got (one all-reduce of one number, as cheap as a flag's), so that every rank
        exits with the same 128 + that number, the one it would give had the signal reached it."""
        if trainer.world_size == 1:
            return self.received
        mine = torch.tensor(int(self.received or 0), device=trainer.strategy.root_device)
        agreed = int(trainer.strategy.reduce(mine, reduce_op="max").item())
        return signal.Signals(agreed) if agreed else None


def batches_every_rank_runs(trainer: Trainer) -> int:
    """The val batches of this validation that every rank runs: the fewest of any rank's (one
    all-reduce under DDP)."""
    mine = torch.tensor(min(sum(trainer.num_val_batches), 2**62), dtype=torch.int64)
    if trainer.world_size == 1:
        return int(mine)
    mine = mine.to(trainer.strategy.root_device)
    return int(trainer.strategy.reduce(mine, reduce_op="min").item())


def mark_preempting(trainer: Trainer) -> None:
    """Rank 0 marks the W&B run as preempting: it is resumed, not failed."""
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.mark_preempting()


def requeue_signal(trainer: Trainer) -> signal.Signals | None:
    """The signal Lightning's SLURM auto-requeue handles in this run, if it is on."""
    environment = cluster_environment(trainer)
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return signal.Signals(environment.requeue_signal or signal.SIGUSR1)
    return None


def chained_handlers(previous: Handler) -> list[Callable[[int, FrameType | None], Any]]:
    """The callables among the handler found at install time, Lightning's composed one opened up.

    Left out: Lightning's `_sigterm_notifier_fn` (this callback does its job, agreed between
    the ranks and with a checkpoint) and submitit's requeue (it comes after the save, from
    lmtrain.utils.requeue). SIG_DFL and SIG_IGN are not callables and are not called.
    """
    handlers = getattr(previous, "signal_handlers", [previous])  # Lightning's _HandlersCompose
    return [
        h
        for h in handlers
        if callable(h)
        and getattr(h, "__name__", "") != "_sigterm_notifier_fn"
        and not is_submitit_requeue_handler(h)
    ]
