"""`ExactResume`: a resumed run draws the random numbers an uninterrupted one would.

Weights, optimizer, LR schedule and loop counters are in every Lightning checkpoint, and the
train windows come from `ResumableWindowSampler`; what is left is the global RNGs that dropout
(and anything else in the training step) draws from. This callback saves each rank's python,
numpy, torch and CUDA RNG states in the checkpoint and sets them again just before the first
resumed training batch. The states are stored as tensors and plain values, so checkpoints
still load with `torch.load(weights_only=True)` (a numpy state would not).

A checkpoint may be written right after a training batch, and the uninterrupted run may then
validate at that step, which a resumed run skips (Lightning fast-forwards past it). Validation
draws random numbers too (text samples), so the callback also puts the RNGs back as they were
when validation started: validation never moves the training stream, and the states saved
after a batch and after the validation that follows it are the same.

A checkpoint may also fall between the micro-batches of one optimizer step: ModelCheckpoint
defers an `every_n_train_steps` save at an epoch's last batch and then writes it after the next
micro-batch, and a preemption may save anywhere. The gradients accumulated so far are then part
of the state: they are saved (each rank's, since DDP syncs only at the step) and put back.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.lightning_compat import accumulating

log = logging.getLogger(__name__)


class ExactResume(Callback):
    """Saves every rank's RNG states in checkpoints and restores them on resume.

    Under DDP only rank 0 writes the checkpoint, but Lightning builds its contents (this
    callback's `state_dict`) on every rank, so the states are gathered to rank 0 there.
    A resume on a different number of ranks keeps the seeded RNGs, with a warning.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None
        self._before_validation: dict[str, Any] | None = None
        self._module: LightningModule | None = None
        self._trainer: Trainer | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng_states": _gather(collect_rng_states())}
        if self._mid_accumulation():
            assert self._module is not None
            grads = {
                name: p.grad.detach().cpu()
                for name, p in self._module.named_parameters()
                if p.grad is not None
            }
            state["grads"] = _gather(grads)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Restoring now would be undone by whatever draws before training (e.g. model setup).
        self._to_restore = state_dict

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        states, grads = state.get("rng_states", []), state.get("grads")
        if len(states) != trainer.world_size:
            log.warning(
                "The checkpoint holds RNG states of %d ranks, this run has %d: keeping the "
                "seeded RNGs, so random draws (dropout) differ from the interrupted run",
                len(states),
                trainer.world_size,
            )
            return
        set_rng_states(states[trainer.global_rank])
        if grads is not None:
            params = dict(pl_module.named_parameters())
            for name, grad in grads[trainer.global_rank].items():
                params[name].grad = grad.to(params[name].device)

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
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
        if trainer.state.fn != TrainerFn.FITTING:
            return False
        trained = trainer.fit_loop.epoch_loop.batch_progress.current.ready > 0
        return trained and accumulating(trainer)


def _gather(states: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's `states` in rank order on rank 0, which writes the checkpoint; the other
    ranks keep their own (a list of one, as without a process group). Gathering to rank 0 only
    spares each rank a copy of every other rank's gradients."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [states]
    gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(states, gathered, dst=0)
    return gathered if gathered is not None else [states]


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
