"""Test-only callbacks that make a real run go wrong on cue, added like any callback:
`+callbacks.nan._target_=tests.faults.InjectNonFinite +callbacks.nan.step=2`.

- `InjectNonFinite` turns one batch's loss into NaN (or inf) on one rank, through a forward hook
  on the input embeddings, so the real loss computation meets it.
- `Pace` tells a test when training is under way (a file per rank holding its pid) and then
  slows each step a little, so that a signal the test sends lands mid-training.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class InjectNonFinite(Callback):
    """Multiplies the embedding output by `value` for the batch of optimizer step `step`
    (1-based: the step that global_step reaches when it completes), on `rank` (null: all)."""

    def __init__(self, step: int, rank: int | None = None, value: float = float("nan")) -> None:
        self.step, self.rank, self.value = step, rank, float(value)
        self.fired = False

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.fired or trainer.global_step + 1 != self.step:
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        self.fired = True
        embeddings = pl_module.model.get_input_embeddings()

        def poison(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
            handle.remove()  # this one forward only
            return output * self.value

        handle = embeddings.register_forward_hook(poison)


class Pace(Callback):
    """After optimizer step `after_step`, writes `<dirpath>/rank<r>.pid` (this process's pid)
    and from then on sleeps `seconds` after each step."""

    def __init__(self, dirpath: str, after_step: int = 2, seconds: float = 0.2) -> None:
        self.dirpath, self.after_step, self.seconds = Path(dirpath), after_step, seconds

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if trainer.global_step < self.after_step:
            return
        pid_file = self.dirpath / f"rank{trainer.global_rank}.pid"
        if not pid_file.exists():
            self.dirpath.mkdir(parents=True, exist_ok=True)
            tmp = pid_file.with_suffix(".tmp")
            tmp.write_text(str(os.getpid()))
            tmp.rename(pid_file)
        time.sleep(self.seconds)
