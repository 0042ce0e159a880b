"""What `CausalLMModule` logs besides the loss, and when the loggers write.

- `val/bpb`: bits per UTF-8 byte of the val tokens, from a per-token byte-length table
  (`lmtrain.data.byte_lengths`), summed on the device (`BitsPerByte`).
- `train/grad_norm`: the global gradient norm before clipping, the one clipping computes anyway;
  `train/clipped`: the share of optimizer steps since the previous log whose gradients were
  clipped; `memory/peak_allocated_gib` and `memory/peak_reserved_gib` on CUDA (`StepStats`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import LearningRateMonitor as LRMonitor
from lightning.pytorch.plugins.precision import Precision
from torch.optim import Optimizer
from torchmetrics import Metric
from transformers import PreTrainedTokenizerBase

from lmtrain.data.byte_lengths import token_byte_lengths
from lmtrain.data.windows import PAD_TOKEN

GIB = 2**30


def loggers_write_after(trainer: Any, step: int, stopping: bool) -> bool:
    """Whether the loggers write after optimizer step `step` (counted from 1), the step of the
    batch in progress: every `log_every_n_steps`, when the run is stopping (`stopping`: see
    `StepDecision`), and after the last step (`max_steps`, or the last step of the
    last epoch).

    Lightning's own rule (its logger connector's `should_update_logs`, on its count of optimizer
    steps), from public Trainer attributes, and the last step, which Lightning writes only
    where it is a multiple of `log_every_n_steps`: `lightning_compat.write_logs_also_after`
    makes it write there too, this being its rule. There the module logs what `metrics.json`
    reports (`trainer.callback_metrics`), which would otherwise be the figures of the last
    `log_every_n_steps` step; with `log_every_n_steps=0` the loggers write no row, and the
    module still logs the last step for `metrics.json`. A stop that a callback decides during
    the step (Timer, EarlyStopping) comes too late for this: see `StepDecision`, `LastStep`.
    """
    every = trainer.log_every_n_steps
    last = 0 < trainer.max_steps <= step or ends_last_epoch(trainer)
    return (every > 0 and (step % every == 0 or stopping)) or last


class StepDecision:
    """`loggers_write_after` with `trainer.should_stop` as it stood at the step's first question.

    Everyone asks before the step's values exist (LearningRateMonitor at its first micro-batch,
    the module at its training steps) and Lightning asks again after every callback's
    `on_train_batch_end`, where Lightning's Timer may just have set `should_stop`: Lightning
    would then write a row of the values an earlier step logged. One answer per step instead;
    the step a late stop ends on gets its row from `LastStep`."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.stopping = False

    def __call__(self, trainer: Any, step: int) -> bool:
        if step != self.step:
            self.step, self.stopping = step, bool(trainer.should_stop)
        return loggers_write_after(trainer, step, self.stopping)


def ends_last_epoch(trainer: Any) -> bool:
    """Whether the batch in progress belongs to the last optimizer step of the last epoch
    `trainer.max_epochs` allows (its last batches, after `limit_train_batches`): Lightning
    steps at the epoch's last batch and stops.

    Every micro-batch of that step counts, as every one of a `max_steps` run's last step
    does: Lightning's LearningRateMonitor asks at the step's first. A loader of unknown length
    is known to end at its last batch only."""
    max_epochs = trainer.max_epochs
    if max_epochs is None or max_epochs < 0 or trainer.current_epoch + 1 < max_epochs:
        return False
    if trainer.is_last_batch:
        return True
    batches = trainer.num_training_batches
    if batches == float("inf"):
        return False
    ready = trainer.fit_loop.epoch_loop.batch_progress.current.ready  # this epoch's batches
    every = trainer.accumulate_grad_batches  # the epoch's steps start every `every` batches
    return ready > 0 and (ready - 1) // every == (int(batches) - 1) // every


class LastStep:
    """The figures of the last optimizer step the module took, for the row of a run that a
    callback stopped after the step's row was decided against.

    Lightning's Timer (`max_time`) stops in `on_train_batch_end`, EarlyStopping after a
    validation (also one between the micro-batches of a step): the loggers had not written the
    step, and `metrics.json` would report an earlier step's `train/loss` and `tokens_seen`.
    Kept on the device at every step (no host sync), logged once, at the stopped epoch's end
    (`on_train_epoch_end`): Lightning writes epoch values under the last step's row number,
    and `trainer.callback_metrics` hold them for `metrics.json`.
    """

    def __init__(self) -> None:
        self.step: int | None = None  # its global_step once taken
        self.written = True  # whether the loggers wrote its row
        self.loss: tuple[torch.Tensor | float, int] = (0.0, 0)  # StepLoss's sum and count
        self.values: dict[str, Any] = {}  # the rest: tokens_seen, train/grad_norm, ...
        self.rates: dict[str, float] = {}  # the learning rates it used, LearningRateMonitor's names

    def record(self, module: Any) -> None:
        """At the step's gradient clipping (once per optimizer step, before it steps)."""
        loss, norm = module.step_loss, module.step_stats.norm
        self.loss = (loss.total, loss.count)  # its mean over micro-batches, when logged
        self.values = {"tokens_seen": module.tokens_seen}
        if norm is not None:
            self.values["train/grad_norm"] = norm
        if module.nan_guard == "skip":
            self.values["train/nonfinite_skips"] = float(module.nonfinite_skips)
        self.step, self.written = module.global_step + 1, module.logs_this_step
        self.rates = learning_rates(module.trainer)

    def log_unwritten(self, module: Any) -> None:
        """From `on_train_epoch_end`: the step's row, where the run stopped on a step the
        loggers did not write (`log_every_n_steps=0`: `metrics.json`'s values only)."""
        trainer = module.trainer
        if not trainer.should_stop or self.written or self.step != trainer.global_step:
            return
        self.written = True
        rows = trainer.log_every_n_steps > 0
        total, count = self.loss
        mean = total / count if count else float("nan")  # a step the NaN guard skipped whole
        module.log("train/loss", mean, prog_bar=True, sync_dist=True, logger=rows)
        for name, value in self.values.items():
            module.log(name, value, logger=rows)
        if rows and self.rates:  # as LearningRateMonitor writes them: a row of their own,
            for logger in trainer.loggers:  # and into callback_metrics (metrics.json reads them)
                logger.log_metrics(self.rates, step=self.step - 1)
            device = trainer.strategy.root_device
            trainer.callback_metrics.update(
                {name: torch.tensor(rate, device=device) for name, rate in self.rates.items()}
            )


def learning_rates(trainer: Any) -> dict[str, float]:
    """The rates of the schedulers' parameter groups as LearningRateMonitor names them
    (`<scheduler name>/<group name>`), those the run's monitors log only."""
    monitors = [c for c in trainer.callbacks if isinstance(c, LRMonitor)]
    logged = {name for monitor in monitors for name in getattr(monitor, "lrs", {})}
    rates = {}
    for config in trainer.lr_scheduler_configs if logged else []:
        groups = config.scheduler.optimizer.param_groups
        for index, group in enumerate(groups):
            name = group.get("name", f"pg{index + 1}" if len(groups) > 1 else None)
            key = f"{config.name}/{name}" if name else config.name
            if key in logged:
                rates[key] = float(group["lr"])
    return rates


# -- validation ---------------------------------------------------------------------------------
def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """`logits` for the loss: float32, as HF's own loss computes it under bf16 or fp16 logits,
    and float64 kept as it is (`trainer.precision=64-true`: a float32 loss would halve it)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def target_losses(
    logits_of: Any, batch: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss in nats of every target token, the targets, which windows are real) of a val batch.

    Under FSDP the short ranks' batches end in windows of `PAD_TOKEN`
    (`lmtrain.data.datamodule`): they go through the forward with the rest (every forward is a
    collective there), and their losses are zeros. Without padding nothing is masked.
    """
    real = batch[:, 0] != PAD_TOKEN
    windows = batch.clamp(min=0)
    targets = windows[:, 1:]
    logits = logits_of(windows[:, :-1])
    flat = at_least_float32(logits.flatten(0, 1))
    losses = F.cross_entropy(flat, targets.flatten(), reduction="none")
    losses = torch.where(real[:, None], losses.view_as(targets), 0.0)
    return losses, targets, real


class BitsPerByte(Metric):
    """Sum of token losses (nats) / ln 2 / sum of the bytes the target tokens spell.

    Numerator and denominator are summed over batches and, when computed, over ranks (a ratio
    of sums, not a mean of ratios); padding windows add nothing to either. The byte table is
    built from the tokenizer at the first update, on the batch's device.
    """

    full_state_update = False

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.byte_lengths: torch.Tensor | None = None
        self.add_state("nats", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("n_bytes", torch.tensor(0, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, losses: torch.Tensor, targets: torch.Tensor, real: torch.Tensor) -> None:
        """`target_losses`' three tensors."""
        if self.byte_lengths is None:
            self.byte_lengths = token_byte_lengths(self.tokenizer)
        self.byte_lengths = self.byte_lengths.to(targets.device)  # once: then already there
        self.nats += losses.sum()
        self.n_bytes += (self.byte_lengths[targets] * real[:, None]).sum()

    def compute(self) -> torch.Tensor:
        return self.nats / math.log(2) / self.n_bytes


# -- optimizer steps ----------------------------------------------------------------------------
def clip_grad_norm(parameters: list[torch.Tensor], max_norm: float) -> torch.Tensor | None:
    """The global 2-norm of the gradients, then the gradients scaled to `max_norm` if above it
    (0: not clipped); None when no parameter has a gradient.

    `torch.nn.utils.clip_grad_norm_` in its two public halves, as torchtitan does it: the norm
    of FSDP2's sharded (DTensor) gradients is a partial result, made whole once
    (`full_tensor`, one all-reduce of a scalar), then used both to clip and to log.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    norm = torch.nn.utils.get_total_norm(grads)
    if hasattr(norm, "full_tensor"):  # a DTensor (FSDP2)
        norm = norm.full_tensor()
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)
    return norm


def clips_like_torch(precision: Any) -> bool:
    """Whether Lightning's precision plugin clips by norm with `clip_grad_norm_` (32-bit, bf16;
    not a GradScaler's fp16, whose Lightning checks stay, nor a plugin that clips its own way)."""
    own_way = type(precision).clip_grad_by_norm is not Precision.clip_grad_by_norm
    return not own_way and getattr(precision, "scaler", None) is None


class StepStats:
    """Clips the gradients as Lightning would and logs what the dashboard shows of each step.

    `train/clipped` counts the steps since the previous log on the device (no host sync) and is
    logged as their mean; the counts go into checkpoints, so a resumed run logs what an
    uninterrupted one does. The norm is computed at every step, clipped or not (one norm of
    the gradients, on the device): a callback may stop the run after any step, whose row then
    has it (`LastStep`). Without clipping `train/clipped` is not logged.
    """

    def __init__(self) -> None:
        self.clipped: torch.Tensor | float = 0.0  # clipped steps since the previous log
        self.steps = 0  # steps since the previous log (those with gradients)
        self.norm: torch.Tensor | float | None = None  # the last step's, before clipping

    def clip_and_log(
        self, module: Any, optimizer: Optimizer, clip_val: float | None, algorithm: Any
    ) -> None:
        """What `configure_gradient_clipping` does, once per optimizer step. A step that
        `nan_guard=skip` skipped whole has no gradients: its norm is NaN, as its loss is (an
        older step's norm stood in its row), and it counts for no clipping."""
        skip_count = getattr(module, "skip_count", None)
        if getattr(module, "nan_guard", None) == "skip" and skip_count and skip_count.whole_step:
            self.norm = float("nan")
            if module.logs_this_step:
                module.log("train/grad_norm", float("nan"))
            return
        precision = module.trainer.precision_plugin
        parameters = list(precision.main_params(optimizer))
        logs = module.logs_this_step
        if algorithm in (None, "norm") and clips_like_torch(precision):
            norm = clip_grad_norm(parameters, clip_val or 0.0)
            if norm is not None and clip_val:
                self.clipped = (clip_val / (norm + 1e-6) < 1).float() + self.clipped  # as torch
                self.steps += 1
        else:  # Lightning clips (by value, or its plugin's way); the norm before
            norm = clip_grad_norm(parameters, 0.0)
            module.clip_gradients(optimizer, clip_val, algorithm)
        self.norm = norm
        if not logs:
            return
        if norm is not None:
            module.log("train/grad_norm", norm)
        if self.steps:
            module.log("train/clipped", self.clipped / self.steps)
            self.clipped, self.steps = 0.0, 0
        if module.device.type == "cuda":  # the highest of any device since the previous log
            device, cuda = module.device, torch.cuda
            allocated = cuda.max_memory_allocated(device)
            reserved = cuda.max_memory_reserved(device)
            cuda.reset_peak_memory_stats(device)
            options = {"sync_dist": True, "reduce_fx": "max"}
            module.log("memory/peak_allocated_gib", allocated / GIB, **options)
            module.log("memory/peak_reserved_gib", reserved / GIB, **options)

    def state_dict(self) -> dict[str, float]:
        return {"clipped": float(self.clipped), "steps": self.steps}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.clipped, self.steps = float(state.get("clipped", 0.0)), int(state.get("steps", 0))
