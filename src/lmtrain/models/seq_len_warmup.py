"""Sequence-length warm-up: the first optimizer steps train on the start of each window only.

Early in training a language model learns short-range statistics (which character follows
which), which short windows teach as well as long ones, for a fraction of the cost: on a CPU a
step's time is about linear in the window length (experiment=shakespeare_char_fast's model, 16
windows: 17 ms at 16 tokens, 56 ms at 64). The windows are truncated, not reshaped, as DeepSpeed's
curriculum learning (`seqlen_truncate`) and Composer's `SeqLengthWarmup` (`truncate=True`) do:
the data order does not change, and the length is a function of the optimizer step alone, so a
resumed run cuts its windows as an uninterrupted one. Neither library plugs into a
LightningModule, hence these few lines (`CausalLMModule.training_step` applies them; not
Lightning's `on_after_batch_transfer` hook, which belongs to the data module when there is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

MULTIPLE = 8  # lengths are multiples of 8: few distinct shapes (each compiles once), GPU-friendly


@dataclass(frozen=True)
class SequenceLengthWarmup:
    """Windows of `start` tokens at the first optimizer step, growing linearly to the full
    window (`data.block_size`) over `steps` steps, in multiples of 8."""

    start: int  # tokens per window at the first step
    steps: int  # optimizer steps over which the length grows to the full window

    def length_at(self, step: int, full: int) -> int:
        """Tokens per window (inputs) at optimizer step `step` (0-based) for windows of `full`."""
        if step >= self.steps:
            return full
        grown = self.start + (full - self.start) * step // self.steps
        return min(full, max(self.start, grown // MULTIPLE * MULTIPLE))

    def truncate(self, windows: torch.Tensor, step: int) -> torch.Tensor:
        """The first `length_at(step)` inputs of each window, and the target after the last."""
        return windows[:, : self.length_at(step, windows.shape[1] - 1) + 1]

    def tokens_through(self, steps: int, full: int) -> int:
        """Tokens per window summed over the first `steps` optimizer steps."""
        warm = min(steps, self.steps)
        return self._cumulative(full)[warm] + (steps - warm) * full

    @cache  # noqa: B019 (frozen and hashable; one table per window size, a few per run)
    def _cumulative(self, full: int) -> tuple[int, ...]:
        """`[0, length_at(0), length_at(0) + length_at(1), ...]` through the warm-up."""
        totals = [0]
        for step in range(self.steps):
            totals.append(totals[-1] + self.length_at(step, full))
        return tuple(totals)


def tokens_per_window(warmup: SequenceLengthWarmup | None, steps: int, full: int) -> int:
    """Tokens each window position has fed the model after `steps` optimizer steps."""
    return steps * full if warmup is None else warmup.tokens_through(steps, full)
