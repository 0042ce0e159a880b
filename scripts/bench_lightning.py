"""One timed Lightning run: bench.py's Lightning side and every run of bench_switches.py.

It runs what `lmtrain.train` runs (the configured callbacks and loggers, plus ExactResume, which
lmtrain.train always adds), so that the overhead measured is the overhead a user pays; the clock
is read after every optimizer step, the same clock as the raw loop's.
"""

from __future__ import annotations

import time
from typing import Any

import hydra
import lightning as L
import torch
from bench_stats import tokens_per_second
from omegaconf import DictConfig

from lmtrain.callbacks.resume import ExactResume
from lmtrain.utils.instantiate import (
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_trainer,
)
from lmtrain.utils.task import finish_wandb


class StepClock(L.Callback):
    """perf_counter after every optimizer step: the same clock the raw loop reads."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: Any) -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the step's kernels, not only their launch
        self.times.append(time.perf_counter())


def run_lightning(cfg: DictConfig, warmup: int) -> float:
    """Tokens per second after `warmup` steps; the W&B run is finished however fit ends."""
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    clock = StepClock()
    # What lmtrain.train runs: the configured callbacks plus ExactResume, which it always adds.
    callbacks = [*instantiate_callbacks(cfg.callbacks), ExactResume(), clock]
    trainer = instantiate_trainer(
        cfg.trainer, callbacks=callbacks, logger=instantiate_loggers(cfg.logger)
    )
    try:
        trainer.fit(module, datamodule=datamodule)
    except BaseException:
        # An open W&B run keeps writing into the script's temporary folder, whose removal then
        # failed in a second traceback and left it behind; a failed run is marked failed.
        finish_wandb(1)
        raise
    finish_wandb(0)
    return tokens_per_second(clock.times, warmup, cfg.data.batch_size * cfg.data.block_size)
