"""`ExactResume`: a resumed run draws the random numbers an uninterrupted one would.

Weights, optimizer, LR schedule and loop counters are in every Lightning checkpoint, and the
train windows come from `ResumableWindowSampler`; what is left is the global RNGs that dropout
(and anything else in the training step) draws from. This callback saves each rank's python,
numpy, torch and CUDA RNG states in the checkpoint and sets them again just before the first
resumed training batch (a run resumed at its end: before its final validation). The states are
stored as tensors and plain values, so checkpoints still load with
`torch.load(weights_only=True)` (a numpy state would not).

A checkpoint may be written right after a training batch, and the uninterrupted run may then
validate at that step, which a resumed run skips (Lightning fast-forwards past it). Validation
draws random numbers too (text samples), so the callback also puts the RNGs back as they were
when validation started: validation never moves the training stream, and the states saved
after a batch and after the validation that follows it are the same.

A checkpoint may also fall between the micro-batches of one optimizer step: a validation in
the middle of a step (`trainer.val_check_interval` counts batches) saves after it, and a
preemption may save anywhere. The gradients accumulated so far are then part
of the state: they are saved and put back (see `gathered_gradients` for what is saved, where it
is held on the way, and how it goes back on another number of ranks).

Last, the epoch counters Lightning gets wrong at an epoch's edge (see
lmtrain.lightning_compat.epochs): a save after a fit left an epoch before its end (`max_steps`)
holds that epoch as under way, so that a run extended with `max_epochs` trains the rest of it;
and a run restarted from a save after an epoch's last batch counts the next epoch as started,
so that a second interruption within it resumes inside it; a validation a restart goes back
into counts once, so that a save after it does not resume into it again.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from lmtrain.errors import RankAgreedError
from lmtrain.lightning_compat import accumulating
from lmtrain.lightning_compat.epochs import (
    count_cut_epoch_as_running,
    count_restarted_validation_once,
    start_epoch_after_restart_at_epoch_end,
)

log = logging.getLogger(__name__)


class ExactResume(Callback):
    """Saves every rank's RNG states in checkpoints and restores them on resume.

    Lightning builds the checkpoint's contents (this callback's `state_dict`) on every rank, and
    rank 0 writes them, so the states are gathered to rank 0 there: over a gloo group, from host
    memory, so that nothing of it lands on a GPU (NCCL would stage every rank's objects in rank
    0's GPU memory). A resume on a different number of ranks keeps the seeded RNGs, with a
    warning, and puts back the gradients of a step cut between micro-batches as their mean.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None
        self._module: LightningModule | None = None
        self._trainer: Trainer | None = None
        self._host_group: Any = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module
        if self._host_group is None:
            self._host_group = host_group()  # a collective: every rank runs setup

    def state_dict(self) -> dict[str, Any]:
        group = self._host_group
        state: dict[str, Any] = {"rng_states": _gather(collect_rng_states(), group)}
        if self._trainer is not None:
            state["accumulation"] = self._trainer.accumulate_grad_batches
        if self._mid_accumulation():
            assert self._module is not None
            state["grads"] = gathered_gradients(self._module, group)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restoring now would be undone by whatever draws before training (e.g. model setup).
        self._to_restore = state_dict

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """A save once `max_steps` (or a stop) ended the fit mid-epoch: that epoch under way."""
        if trainer.state.fn == TrainerFn.FITTING:
            count_cut_epoch_as_running(trainer, checkpoint)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Set the loop counters a restart leaves wrong (the next epoch after a restart at an
        epoch's end, a validation restarted); then refuse another gradient accumulation where
        the checkpoint is not at a step boundary of both: Lightning counts a step's
        micro-batches from the epoch's start with the new accumulation, so the first resumed
        step would be cut short (its gradient a fraction of one) and every later row logged at
        another step. Every rank reads the same checkpoint and settings, so all refuse together:
        one line (rank 0's). Nothing of the run folder changes: `CSVBatchStarts` counts training
        as started at its first batch, so the CSV logger puts hparams.yaml back."""
        start_epoch_after_restart_at_epoch_end(trainer)
        count_restarted_validation_once(trainer)
        saved = (self._to_restore or {}).get("accumulation")
        now = trainer.accumulate_grad_batches
        if saved is None or saved == now:
            return
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed  # this epoch's
        if done >= trainer.num_training_batches:
            return  # an epoch's end: the next step starts the next epoch
        if (self._to_restore or {}).get("grads") or done % now:
            raise RankAgreedError(
                f"the checkpoint was saved {done} micro-batches into its epoch at {saved} "
                f"micro-batches a step; this run makes {now} (global_batch_size / "
                f"data.batch_size / ranks), and {done} is not a step boundary of both: resume "
                f"with the run's global_batch_size, then change it at a checkpoint whose count "
                f"is a multiple of {now}"
            )

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._restore(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """A run resumed at its end trains no batch: the states go back before the final
        validation, whose text samples draw from them (they were the seeded ones)."""
        self._restore(trainer, pl_module)

    def _restore(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        states, grads = state.get("rng_states", []), state.get("grads")
        if len(states) == trainer.world_size:
            set_rng_states(states[trainer.global_rank])
        else:
            log.warning(
                "The checkpoint holds RNG states of %d ranks, this run has %d: keeping the "
                "seeded RNGs, so random draws (dropout) differ from the interrupted run",
                len(states),
                trainer.world_size,
            )
        if grads:
            restore_gradients(pl_module, grads, trainer.world_size, trainer.global_rank)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._restore(trainer, pl_module)  # a resume into a pending validation: its samples
        self._before_validation = collect_rng_states()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Runs before ModelCheckpoint's on_validation_end (Lightning orders checkpoint
        # callbacks last), so a checkpoint written after validation holds these states.
        if self._before_validation is not None:
            set_rng_states(self._before_validation)
            self._before_validation = None

    def _mid_accumulation(self) -> bool:
        """Whether the last trained micro-batch was not followed by an optimizer step."""
        trainer = self._trainer
        # Also during a validation inside fit, which may come between micro-batches of a step.
        if trainer is None or trainer.accumulate_grad_batches == 1:
            return False
        return trainer.state.fn == TrainerFn.FITTING and mid_step(trainer)


def mid_step(trainer: Trainer) -> bool:
    """Whether `trainer` is between the micro-batches of an optimizer step: a micro-batch of this
    epoch trained, and no step followed it (a save there, or a validation there, comes inside
    the step)."""
    trained = trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0
    return trained and accumulating(trainer)


def host_group() -> Any:
    """A gloo process group over all ranks (collectives on host memory), or None for the default
    group when it is gloo already, or when there is no process group."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    return None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def _gather(obj: Any, group: Any = None) -> list[Any]:
    """Every rank's `obj` in rank order on rank 0, which writes the checkpoint; the other ranks
    keep their own (a list of one, as without a process group). Over `group` (gloo: pickled in
    host memory). Gathering to rank 0 only spares each rank a copy of every other rank's."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, gathered, dst=0, group=group)
    return gathered if gathered is not None else [obj]


def gathered_gradients(module: LightningModule, group: Any = None) -> list[dict[str, Tensor]]:
    """The gradients accumulated so far, as rank 0 writes them: a list of per-rank dicts of
    full CPU tensors, gathered one parameter at a time over the host `group`.

    - DDP syncs only at the step: each rank holds its own partial sum, a full-size tensor.
      Rank 0 gathers all of them (ranks x one gradient, the size of what it then writes: one
      file, which it must hold to write), and the resume on as many ranks is bitwise.
    - FSDP syncs every micro-batch: every rank holds its dim-0 shard of the same averaged sum.
      Each rank sends its shard, and rank 0 joins them into one full gradient (one entry): one
      gradient's worth of host memory on rank 0, whatever the number of ranks, and a state any
      number of ranks (and DDP, after consolidation) can resume from. (Each rank writing its
      shard into the sharded folder would hold less, but tie this callback to the strategy's
      checkpoint layout; such saves are rare: a step cut by a preemption or a deferred save.)

    Nothing goes through a GPU: each tensor is copied to host memory, one at a time, and
    sent over gloo.
    """
    grads = [(name, p.grad) for name, p in module.named_parameters() if p.grad is not None]
    if not any(isinstance(grad, DTensor) for _, grad in grads):
        # Rank r's tensor at position r of each list (on rank 0; the others keep their own).
        per_rank = [(name, _gather(grad.detach().cpu(), group)) for name, grad in grads]
        ranks = len(per_rank[0][1]) if per_rank else 1
        return [{name: tensors[r] for name, tensors in per_rank} for r in range(ranks)]
    full = {}
    for name, grad in grads:
        if grad.placements != (Shard(0),):
            raise RuntimeError(f"{name}: a gradient sharded as {grad.placements}, not on dim 0")
        full[name] = torch.cat(_gather(grad.to_local().detach().cpu(), group))
    return [full]


def restore_gradients(
    module: LightningModule, grads: list[dict[str, Tensor]], world_size: int, rank: int
) -> None:
    """Put the saved gradients back: each DDP rank its own when the ranks are as many as they
    were; otherwise, and under FSDP (which holds one gradient for all ranks), their mean, which
    is what the ranks sum to at the step (the same global micro-batch is checked on resume).
    A sharded parameter takes its shard of it, cut locally."""
    params = dict(module.named_parameters())
    sharded = any(isinstance(p, DTensor) for p in params.values())
    per_rank = len(grads) == world_size and not sharded
    for name in grads[0]:
        if per_rank or len(grads) == 1:
            saved = grads[rank if per_rank else 0][name]
        else:
            saved = sum(g[name] for g in grads) / len(grads)
        param = params[name]
        grad = saved.to(param.device)
        if isinstance(param, DTensor):
            grad = distribute_tensor(grad, param.device_mesh, param.placements, src_data_rank=None)
        param.grad = grad


def collect_rng_states() -> dict[str, Any]:
    """This process's python, numpy, torch and CUDA RNG states, as tensors and plain values."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(mt, dtype=torch.int64), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        # This process's own GPU only: a resume may see another number of GPUs per process.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Undo `collect_rng_states`: set every RNG it saved."""
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(mt.tolist()), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    cuda = states["cuda"]
    if cuda and torch.cuda.is_available():
        # Saved: this process's GPU's state. Checkpoints of older versions list every visible
        # GPU's: the one of this process's device, if there is one.
        index = torch.cuda.current_device() if len(cuda) > 1 else 0
        torch.cuda.set_rng_state(cuda[min(index, len(cuda) - 1)])
