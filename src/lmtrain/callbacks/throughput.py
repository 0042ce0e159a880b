"""Tokens/s, samples/s, FLOP/s and MFU while training: Lightning's ThroughputMonitor, fitted to LMs.

Two things Lightning's callback leaves open. Its peak-FLOPs table covers known GPUs only, so on a
CPU (or a GPU it does not list) `available_flops` comes from config, and the log says so. And it
logs to the loggers alone, so the tokens/s figure is also put in the progress bar.
FLOPs per batch come from the module's `flops_per_batch` (see `lmtrain.models.flops`).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lmtrain.lightning_compat import set_peak_flops, throughputs
from lmtrain.models.module import loggers_write_after

PROGRESS_BAR_KEY = "tok/s"


def windows_in(batch: torch.Tensor) -> int:
    """Samples per batch: the windows."""
    return batch.shape[0]


def tokens_in(batch: torch.Tensor) -> int:
    """Items per batch: the predicted tokens (each window holds block_size + 1 ids)."""
    return batch.shape[0] * (batch.shape[1] - 1)


class TokenThroughputMonitor(ThroughputMonitor):
    def __init__(self, available_flops: float | None = None, window_size: int = 50) -> None:
        """`available_flops`: the peak FLOP/s of one device at the training precision, used for
        MFU when Lightning's own table has no entry for the device (always so on CPUs)."""
        super().__init__(batch_size_fn=windows_in, length_fn=tokens_in, window_size=window_size)
        self.configured_flops = available_flops

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        device = trainer.strategy.root_device
        if self.available_flops is not None:
            source = f"Lightning's peak for {device}"
        elif self.configured_flops:
            set_peak_flops(self, self.configured_flops)
            source = (
                "the peak from config (callbacks.throughput.available_flops): Lightning knows "
                f"none for {device}"
            )
        else:
            source = None
        if stage != "fit":
            return
        if source:
            rank_zero_info(f"MFU against {self.available_flops:.3g} FLOP/s, {source}")
        else:
            rank_zero_info(
                f"No MFU: Lightning knows no peak FLOP/s for {device}; set "
                "callbacks.throughput.available_flops to log it"
            )

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if not trainer.is_global_zero:  # Lightning's hooks update the figures on rank 0 only
            return
        throughput = throughputs(self).get(trainer.state.stage)
        # Only on the steps where the loggers got fresh figures; the progress bar keeps the
        # last value in between, and it goes to the bar only (the loggers have it already).
        if throughput is not None and loggers_write_after(trainer, trainer.global_step):
            metrics = throughput.compute()
            # All devices' tokens/s; Lightning names it so only when there is more than one.
            tokens_per_s = metrics.get("items_per_sec", metrics.get("device/items_per_sec"))
            if tokens_per_s is not None:
                pl_module.log(PROGRESS_BAR_KEY, tokens_per_s, prog_bar=True, logger=False)
