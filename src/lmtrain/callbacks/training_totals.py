"""`TrainingTotals`: what `metrics.json` needs from training, kept in checkpoints.

The final metrics are the last metrics training logged (train/loss, tokens_seen, ...), the final
validation's, and the training time. A run killed after training ended, during its final
validation, resumes from a checkpoint at `max_steps`: `Trainer.fit` then returns at once and
logs nothing, so without this the resumed `metrics.json` would lack the train metrics and count
only the seconds of the resumed process. Lightning keeps neither in its checkpoints.
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

# Metrics of validation are measured again by the final validation: not carried over.
VALIDATION_PREFIX = "val/"


class TrainingTotals(Callback):
    """Saves the training time so far and the last logged training metrics in checkpoints;
    `train_seconds()` and `train_metrics()` give the totals over every resumed process."""

    def __init__(self) -> None:
        self._seconds_before = 0.0  # trained in earlier processes of this run
        self._started: float | None = None
        self._restored_metrics: dict[str, float] = {}
        self._trainer: Trainer | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._trainer, self._started = trainer, time.perf_counter()

    def train_seconds(self) -> float:
        """Seconds spent in `Trainer.fit`, over this process and those it resumed."""
        now = time.perf_counter() if self._started is not None else 0.0
        return self._seconds_before + now - (self._started or 0.0)

    def train_metrics(self) -> dict[str, float]:
        """The last training metrics: restored ones, overridden by any this process logged."""
        logged = self._trainer.callback_metrics if self._trainer is not None else {}
        current = {k: float(v) for k, v in logged.items() if not k.startswith(VALIDATION_PREFIX)}
        return {**self._restored_metrics, **current}

    def state_dict(self) -> dict[str, Any]:
        return {"train_seconds": self.train_seconds(), "train_metrics": self.train_metrics()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._seconds_before = float(state_dict.get("train_seconds", 0.0))
        self._restored_metrics = dict(state_dict.get("train_metrics", {}))
