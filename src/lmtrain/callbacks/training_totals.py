"""`TrainingTotals`: what `metrics.json` needs from training, kept in checkpoints.

The final metrics are the last metrics training logged (train/loss, tokens_seen, ...), the final
validation's, and the training time. A run killed after training ended, during its final
validation, resumes from a checkpoint at `max_steps`: `Trainer.fit` then returns at once and
logs nothing, so without this the resumed `metrics.json` would lack the train metrics and count
only the seconds of the resumed process. Lightning keeps neither in its checkpoints.

The progress bar's `tok/s` is not carried over: it is the rate of the last full throughput window
of the process that measured it, on that process's devices. A resumed process that trained too
few steps to fill a window (or none) reports no `tok/s` rather than an earlier process's figure
as its own; one that fills a window reports its own.

The time is the training loop's (`on_train_start` to `on_train_end`: steps, in-training
validations and checkpoint saves), not `Trainer.fit`'s: a resumed process spends its first
seconds (minutes, for a large model on slow storage) loading and restoring the checkpoint, which
an uninterrupted run never does. So the total is what each process trained up to the checkpoint
the next one resumed from, whatever the resumes cost.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.callbacks.throughput import PROGRESS_BAR_KEY

# Metrics of validation are measured again by the final validation: not carried over.
VALIDATION_PREFIX = "val/"
# Rates of one process, on its devices: reported only by the process that measured them.
PER_PROCESS = (PROGRESS_BAR_KEY,)


class TrainingTotals(Callback):
    """Saves the training time so far and the last logged training metrics in checkpoints;
    `train_seconds()` and `train_metrics()` give the totals over every resumed process."""

    def __init__(self) -> None:
        self._seconds_before = 0.0  # trained in earlier processes of this run
        self._seconds_here = 0.0  # trained in this process, in training loops that ended
        self._started: float | None = None  # while a training loop runs: when it started
        self._restored_metrics: dict[str, float] = {}
        self._trainer: Trainer | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer = trainer

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._started = time.perf_counter()  # the checkpoint, if any, is restored by now

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._started is not None:
            self._seconds_here += time.perf_counter() - self._started
            self._started = None

    def train_seconds(self) -> float:
        """Seconds in the training loop, over this process and those it resumed."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self._seconds_before + self._seconds_here + running

    def train_metrics(self) -> dict[str, float]:
        """The last training metrics: restored ones, overridden by any this process logged."""
        logged = self._trainer.callback_metrics if self._trainer is not None else {}
        current = {k: float(v) for k, v in logged.items() if not k.startswith(VALIDATION_PREFIX)}
        return {**self._restored_metrics, **current}

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds(), "train_metrics": self.train_metrics()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._seconds_before = float(state_dict.get("train_seconds", 0.0))
        restored = state_dict.get("train_metrics", {})
        self._restored_metrics = {k: v for k, v in restored.items() if k not in PER_PROCESS}
