"""Tokens/s, samples/s, FLOP/s and MFU while training, on Lightning's `Throughput` metric.

Lightning's ThroughputMonitor callback does three things this one does differently: it takes its
peak FLOP/s from a table that lacks or mislabels current GPUs (here `callbacks.peak_flops`, then
the config), it synchronizes the GPU after every batch (here only on the steps the loggers
write), and it shows nothing in the progress bar (here `tok/s`, on one device too). The rolling
figures themselves are Lightning's `Throughput`, fed the module's measured `flops_per_batch`
(see `lmtrain.models.flops`).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.fabric.utilities.throughput import Throughput, get_available_flops
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from lmtrain.callbacks.peak_flops import device_peak

PROGRESS_BAR_KEY = "tok/s"
PREFIX = "train/"


class TokenThroughputMonitor(Callback):
    def __init__(self, available_flops: float | None = None, window_size: int = 4) -> None:
        """`available_flops`: peak FLOP/s of one device at the training precision, for MFU on
        devices neither table knows (every CPU). `window_size`: logged steps averaged; the first
        figures come at the window_size-th (Lightning's `Throughput` waits for a full window).
        The config checks name bad values in one line (utils/callback_checks.py)."""
        if available_flops is not None and not available_flops > 0:
            raise ValueError(f"available_flops={available_flops!r}: pass a positive number")
        if window_size < 2:  # a rate needs two logged steps
            raise ValueError(f"window_size={window_size!r}: pass a whole number of at least 2")
        self.configured_flops = available_flops
        self.window_size = window_size
        self._paused_at: float | None = None  # when the validation in progress began
        self.throughput: Throughput | None = None
        self._step_seen: int | None = None  # global_step after the previous micro-batch
        # Micro-batches, windows and tokens since the run began: in checkpoints, so that a
        # resumed run's train/batches, train/samples and train/lengths go on from them.
        self.totals = {"batches": 0, "samples": 0, "tokens": 0}

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        peak, source = self.peak(trainer)
        if peak is None:
            rank_zero_info(
                f"No MFU: no peak FLOP/s is known for {trainer.strategy.root_device}; set "
                "callbacks.throughput.available_flops to log it"
            )
        else:
            rank_zero_info(f"MFU against {peak:.3g} FLOP/s per device: {source}")
        self.throughput = Throughput(
            available_flops=peak, world_size=trainer.world_size, window_size=self.window_size
        )

    def peak(self, trainer: Trainer) -> tuple[float | None, str]:
        """Peak FLOP/s of one device: our table, Lightning's, then the config."""
        device = trainer.strategy.root_device
        dtype = training_dtype(trainer)
        ours = device_peak(device, dtype)
        if ours is not None:
            return ours[0], f"lmtrain's table, {ours[1]}"
        lightning = get_available_flops(device, dtype)
        if lightning is not None:
            return float(lightning), f"Lightning's table for {device}, {dtype}"
        if self.configured_flops:
            return float(self.configured_flops), "callbacks.throughput.available_flops"
        return None, ""

    def state_dict(self) -> dict[str, Any]:
        return dict(self.totals)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.totals.update({k: int(v) for k, v in state_dict.items() if k in self.totals})

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # train/time: this process's wall-clock in training, validations left out (below).
        self._start = time.perf_counter()
        self._flops_since_update = 0
        # Logged after the next micro-batch that steps (a resumed run's checkpoint step was
        # logged before its save: not again).
        self._step_seen = trainer.global_step

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and self.throughput is not None:
            self._paused_at = time.perf_counter()

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, idx: int
    ) -> None:
        """A validation, and what follows it (text samples, checkpoint saves), is not training:
        its time leaves the rates, as Lightning's ThroughputMonitor takes its validations'."""
        if self._paused_at is not None:
            self._start += time.perf_counter() - self._paused_at
            self._paused_at = None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        """Count every micro-batch; update and log after the optimizer steps the loggers write:
        at the micro-batch that stepped (global_step moved on), never between the micro-batches
        of a step, whose figures would cover part of it. `trainer.log_every_n_steps=0` writes no
        training row at all: not even the last step's, which `loggers_write_after` lets through
        (the rows go to the loggers directly, past Lightning's own check of that setting). The
        module's own decision for the step (`StepDecision`): a stop set during it (max_time's
        Timer) writes no row here that the module's row does not match."""
        totals = self.totals
        totals["batches"] += 1
        totals["samples"] += batch.shape[0]
        # Tokens predicted per window: the window's length, or a sequence-length warm-up's cut.
        totals["tokens"] += batch.shape[0] * pl_module.window_lengths[0]
        self._flops_since_update += pl_module.flops_per_batch or 0
        step = trainer.global_step
        stepped, self._step_seen = step != self._step_seen, step
        if self.throughput is None or not stepped or trainer.log_every_n_steps == 0:
            return
        if not pl_module.logs_after(trainer, step):
            return
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the GPU's queue is what was timed
        self.throughput.update(
            time=time.perf_counter() - self._start,
            batches=totals["batches"],
            samples=totals["samples"],
            lengths=totals["tokens"],
            flops=self._flops_since_update or None,
        )
        self._flops_since_update = 0
        metrics = {PREFIX + k: v for k, v in self.throughput.compute().items()}
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                # Under the step this step's train/loss has: Lightning numbers training rows
                # from 0 (before its step count moves on).
                logger.log_metrics(metrics, step=step - 1)
        # All devices' tokens/s (Lightning's name for it exists with several devices only).
        per_device = metrics.get(PREFIX + "device/items_per_sec")
        if per_device is not None:
            tokens_per_s = per_device * trainer.world_size
            pl_module.log(PROGRESS_BAR_KEY, tokens_per_s, prog_bar=True, logger=False)


def training_dtype(trainer: Trainer) -> torch.dtype:
    """The dtype the model's matmuls run in: FSDP's `param_dtype` where the strategy casts the
    blocks itself (trainer=fsdp keeps `precision: 32-true` for the fp32 master weights), else
    the precision setting's. MFU divides by that dtype's peak."""
    policy = getattr(trainer.strategy, "mp_policy", None)
    if policy is not None and policy.param_dtype is not None:
        return policy.param_dtype
    return compute_dtype(str(trainer.precision))


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype matmuls run in at a Lightning precision setting ("bf16-mixed", "32-true", ...)."""
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32
