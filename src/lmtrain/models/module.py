"""`CausalLMModule`: a Hugging Face causal LM, its next-token loss and AdamW, as a LightningModule.

Each batch is one int64 tensor of windows `block_size + 1` tokens long; the model reads
`window[:, :-1]` and predicts `window[:, 1:]`, which is exactly the shift HF applies to `labels=`.
The checkpoint carries the HF config and the tokenizer files, so `lmtrain.eval`, `lmtrain.generate`
and `lmtrain.export` need nothing but the `.ckpt` file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import LightningModule
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.lightning_compat import load_train_loader_states, write_logs_also_after
from lmtrain.models import distributed, lora, metrics, optimizers, resumed_optimizer
from lmtrain.models.checkpoint_contents import tokenizer_file_texts
from lmtrain.models.checkpoint_extras import add_extras
from lmtrain.models.data_fit import check_fits_batch, check_fits_data
from lmtrain.models.flops import scaled
from lmtrain.models.hf import build_causal_lm, check_trainable_attention, freeze_parameters
from lmtrain.models.metric_states import reset_in_float32
from lmtrain.models.metrics import BitsPerByte, LastStep, StepDecision, StepStats, target_losses
from lmtrain.models.module_arguments import (
    check_module_arguments,
    described_model,
    load_module,
    own_copies,
)
from lmtrain.models.module_loading import prepare_load
from lmtrain.models.nan_guard import SkipCount, check_nan_guard, refuse_spoilt_save, skip_nonfinite
from lmtrain.models.schedule_steps import schedule_steps, warn_schedule_misfits
from lmtrain.models.seq_len_warmup import SequenceLengthWarmup
from lmtrain.models.step_logs import StepLoss, tokens_seen
from lmtrain.utils.checkpoint_io import read_weights_only
from lmtrain.utils.damaged_checkpoint import advice_key


class CausalLMModule(LightningModule):
    def __init__(
        self,
        model_type: str | None = None,
        config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., LRScheduler] | None = None,
        attn_implementation: str | None = "sdpa",
        compile: bool = False,
        freeze: Mapping[str, Any] | None = None,
        peft: Mapping[str, Any] | str | None = None,
        nan_guard: str = "stop",
        nan_guard_max_skips: int = 10,
        seq_len_warmup: Mapping[str, int] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        model: PreTrainedModel | None = None,
    ) -> None:
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`): the module hands
        them the parameter groups, and the scheduler the number of optimizer steps. `freeze`
        holds `embeddings` and `first_n_blocks` (fine-tuning); `peft` the LoRA settings (see
        `lmtrain.models.lora`). `nan_guard` says what a NaN or infinite training loss does:
        `stop`, `skip` (`nan_guard_max_skips` whole steps in a row at most) or `off` (see
        `lmtrain.models.nan_guard`). `seq_len_warmup` (`start`, `steps`) shortens the first
        steps' windows (`lmtrain.models.seq_len_warmup`). `model` wraps an HF model already
        built (evaluation of a checkpoint or an export). `model_type`: gpt2 unless `pretrained`
        or `model` names it (`module_arguments.described_model`)."""
        super().__init__()
        # Plain values only (weights_only loads), copied: the caller may change its dicts after.
        config, freeze, peft, seq_len_warmup = own_copies(config, freeze, peft, seq_len_warmup)
        model_type, config, pretrained = described_model(model_type, config, pretrained, model)
        ignore = ["optimizer", "scheduler", "tokenizer", "model"]
        self.save_hyperparameters(ignore=ignore, logger=False)
        parts = isinstance(optimizer, optimizers.OptimizerParts)
        freeze = check_module_arguments(tokenizer, freeze, optimizer, scheduler, self.hparams)
        self.tokenizer = tokenizer
        self.peft = lora.lora_settings(peft, freeze, pretrained) if model is None else None
        if self.peft is not None:  # LoRA checkpoints hold the adapters alone
            self.strict_loading = False  # (left unset otherwise, so that strict= is taken)
        # Pretrained weights are read by global rank 0 only (see lmtrain.models.distributed).
        on_meta = bool(pretrained) and model is None and rank_zero_only.rank > 0
        self.model = model or self.build_model(on_meta)
        # The parameters that get weight decay, by name, chosen here on the unsharded model.
        self.decay_names = distributed.decay_parameter_names(self.model)
        if parts:  # refuse a bad split before fit
            optimizer.split(self.model)
        self.nan_guard = check_nan_guard(nan_guard, nan_guard_max_skips)
        self.seq_len_warmup = SequenceLengthWarmup(**seq_len_warmup) if seq_len_warmup else None
        self.window_lengths = (0, 0)  # tokens per training window: this step's, the data's
        # Micro-batches whose loss was not finite and was skipped (nan_guard=skip), checkpointed.
        self.nonfinite_skips = 0
        self.skip_count = SkipCount(nan_guard_max_skips)  # of the step, and in a row
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler
        self.val_loss = MeanMetric()
        self.val_bpb = BitsPerByte(tokenizer) if tokenizer is not None else None
        self.step_stats = StepStats()  # train/grad_norm, train/clipped, peak memory
        self.step_loss = StepLoss()  # train/loss: each step's mean over micro-batches and ranks
        self.logs_after, self.last_step = StepDecision(), LastStep()  # rows (models.metrics)
        # The resolved run config (plain values), set by lmtrain.train and stored in checkpoints
        # so that eval can rebuild the data the model was trained on.
        self.run_config: dict[str, Any] | None = None
        # Tokens read and the steps they count (checkpoint, model card); a resume's start.
        self.tokens_seen, self.tokens_steps = 0.0, 0
        self.tokens_before: tuple[float, int] | None = None
        # The optimizer step of the latest validation during fit (lmtrain.train skips its final
        # validation when training ended on one of the whole val split).
        self.validated_at_step: int | None = None
        self.train_flops_per_batch: int | None = None  # fwd + bwd, counted by lmtrain.train

    def build_model(self, on_meta: bool = False) -> PreTrainedModel:
        """The HF model the hyperparameters describe, frozen as `freeze` says, or with LoRA
        adapters (`peft`, a PeftModel); `on_meta`: a pretrained model's architecture only, on
        the meta device."""
        h = self.hparams
        tokenizer = self.tokenizer
        if on_meta:
            model = distributed.pretrained_on_meta(
                h.pretrained, h.attn_implementation, h.model_type, h.config
            )
        else:
            model = build_causal_lm(
                h.model_type,
                h.config,
                h.pretrained,
                h.attn_implementation,
                vocab_size=len(tokenizer) if tokenizer is not None else None,
                eos_token_id=tokenizer.eos_token_id if tokenizer is not None else None,
                frozen_base=self.peft is not None,  # LoRA: the base keeps its saved dtype
            )
        freeze_parameters(model, **dict(h.freeze or {}))
        return model if self.peft is None else lora.add_adapters(model, self.peft, h.pretrained)

    # -- forward and loss ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits for every position of `input_ids`, with no KV cache: HF's default
        (`use_cache=True`) copies every layer's keys and values into a cache each forward.
        A compiled model keeps the default: traced without it, SDPA gets a mask, not is_causal."""
        kwargs = {} if self.hparams.compile else {"use_cache": False}
        return self.model(input_ids=input_ids, **kwargs).logits

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross entropy over every position (in float32 as HF, or float64)."""
        inputs, targets = windows[:, :-1], windows[:, 1:]
        logits = self(inputs)
        return F.cross_entropy(metrics.at_least_float32(logits.flatten(0, 1)), targets.flatten())

    # Under `torch.compile(module)` Lightning compiles the step methods too; Dynamo fails on
    # Lightning's `self.log` (as of torch 2.13) and would graph-break on every guard and count
    # here anyway. The steps stay eager and call the compiled `forward`, where the work is.
    @torch.compiler.disable
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        check_fits_batch(self, batch, "train")  # the first one, of a loader without its data
        full = batch.shape[1] - 1
        if self.seq_len_warmup is not None:  # the first steps read the windows' first tokens
            batch = self.seq_len_warmup.truncate(batch, self.global_step)
        self.window_lengths = (batch.shape[1] - 1, full)  # read by the throughput monitor
        loss = self.loss(batch)
        self.tokens_seen, self.tokens_steps = tokens_seen(self, batch.shape[0], full)  # derived
        skip = self.nan_guard != "off" and skip_nonfinite(self, loss)
        self.step_loss.update(self, loss, skip)  # logs train/loss at the step's last micro-batch
        if self.logs_this_step:
            self.log("tokens_seen", self.tokens_seen)
            if self.nan_guard == "skip":
                self.log("train/nonfinite_skips", float(self.nonfinite_skips))
        if not skip:
            return loss
        if self.trainer.world_size == 1:
            # None: Lightning skips backward; the optimizer steps with no gradients (AdamW
            # leaves the weights and its state alone), and global_step and the schedule move on.
            return None
        # Lightning refuses None under DDP. Every rank skips together, so a loss with exactly
        # zero gradients keeps DDP's all-reduce in step; on_before_optimizer_step drops them.
        return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """DDP, nan_guard=skip: a step whose micro-batches were all skipped holds only zeros;
        dropping them makes AdamW leave the weights and its state alone, as with one process."""
        if self.nan_guard == "skip" and self.skip_count.whole_step:
            optimizer.zero_grad(set_to_none=True)

    @property
    def logs_this_step(self) -> bool:
        """Whether the loggers write after this step (`models.metrics.StepDecision`). Each
        `self.log` costs Lightning ~0.3 ms of Python (it moves its stored result to the device
        on every call), 1-2% of a small CPU model's step, and on the other steps the value
        would be overwritten unread; `scripts/bench.py` measures the difference. The progress
        bar shows the last logged loss."""
        return self.logs_after(self.trainer, self.global_step + 1)

    @property
    def flops_per_batch(self) -> int | None:
        """FLOPs of the current micro-batch, read by the throughput monitor (`flops.scaled`)."""
        return scaled(self.train_flops_per_batch, self.training, self.window_lengths)

    def on_validation_epoch_start(self) -> None:
        # Anew, under this validation's grad mode, in float32 (lmtrain.models.metric_states).
        reset_in_float32(self.val_loss, self.val_bpb, model_dtype=self.dtype)

    @torch.compiler.disable  # eager, as training_step
    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Weighted by windows, so a short last batch counts for what it holds; the metrics sync
        # over the ranks when computed. Padding windows (FSDP) count for nothing.
        check_fits_batch(self, batch, "val")  # the first one, of a loader without its data
        losses, targets, real = target_losses(self, batch)
        windows = real.sum()
        self.val_loss.update(losses.sum() / (windows.clamp(min=1) * targets.shape[1]), windows)
        if self.val_bpb is not None:
            self.val_bpb.update(losses, targets, real)

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        # Synced already: sync_dist=True (the max of equal values) stops Lightning's DDP warning.
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log("val/ppl", loss.exp(), sync_dist=True, reduce_fx="max")
        if self.val_bpb is not None:  # bits per byte: comparable across tokenizers
            self.log("val/bpb", self.val_bpb.compute(), sync_dist=True, reduce_fx="max")
            self.val_bpb.reset()
        if self.trainer.state.fn == "fit" and not self.trainer.sanity_checking:
            self.validated_at_step = self.global_step

    # -- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer over the trainable parameters, and its schedule: see
        `lmtrain.models.optimizers` (`decay_names`: chosen on the unsharded shapes)."""
        scheduled = self.scheduler_factory is not None  # the steps are the trainer's
        steps = schedule_steps(self) if scheduled else 0  # lmtrain.models.schedule_steps
        if scheduled and self.trainer.is_global_zero:
            warn_schedule_misfits(self, steps)  # a warm-up or WSD phases longer than the run
        config = optimizers.configure_optimizers(
            self.model, self.decay_names, self.optimizer_factory, self.scheduler_factory, steps
        )
        self.configured_groups = resumed_optimizer.configured_groups(config)
        return config

    def on_train_start(self) -> None:
        """After a checkpoint's restore: this run's optimizer settings apply (resumed_optimizer),
        and the train loader goes on where the checkpoint stopped."""
        resumed_optimizer.apply_configured(self.trainer, getattr(self, "configured_groups", []))
        load_train_loader_states(self.trainer)  # an epoch-bound fit built its loader too early

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip as Lightning does, keeping the norm clipping computes: see `StepStats`."""
        self.step_stats.clip_and_log(self, optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.last_step.record(self)  # once per optimizer step

    def on_train_epoch_end(self) -> None:  # a callback stopped the run: that step's row
        self.last_step.log_unwritten(self)

    def setup(self, stage: str) -> None:  # built apart? (the loaders alone: at their 1st batch)
        self.loaders_to_check = check_fits_data(self.model, self.tokenizer, self.trainer.datamodule)
        read_weights_only(self.trainer.strategy)  # a plain Trainer's resume: no pickle
        if stage == "fit":  # a sharded checkpoint folder needs trainer=fsdp
            write_logs_also_after(self.trainer, self.logs_after)  # the last step's row
            distributed.check_resume_strategy(self.run_config, self.device_mesh is not None)
            check_trainable_attention(self.hparams.attn_implementation, self.trainer.strategy)

    def configure_model(self) -> None:
        """Under trainer=fsdp (a device mesh): shard the model, block by block (the strategy's
        `shard`). Otherwise: rank > 0's pretrained model, built on the meta device, reads its
        weights now, and `compile` compiles the HF model in place (nn.Module.compile keeps
        state_dict names clean, so checkpoints and exports load into an uncompiled model)."""
        if self.device_mesh is not None:
            lora.check_not_sharded(self.model)
            compile_blocks = bool(self.hparams.compile)
            distributed.shard(self.trainer.strategy, self.model, compile_blocks, self.nan_guard)
            return
        if any(p.is_meta for p in self.model.parameters()):
            self.model = self.build_model()
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile()
            self._compiled = True

    # -- checkpoint contents ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.nan_guard != "off" and self._trainer is not None:  # a Trainer's save
            refuse_spoilt_save(self)  # a checkpoint of NaN weights would replace a good one
        add_extras(self, checkpoint)  # lmtrain.models.checkpoint_extras

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        prepare_load(self, checkpoint, self._trainer)  # lmtrain.models.module_loading

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool = True,
        **kwargs: Any,
    ) -> CausalLMModule:
        """Lightning's, as `module_arguments.load_module` gives it: weights-only, with the
        checkpoint's own tokenizer, a YAML `hparams_file` read, misspelt keywords refused.
        `lmtrain.models.checkpoint.load_model` gives the plain HF model and tokenizer instead."""
        options = {"map_location": map_location, "strict": strict}
        load = super().load_from_checkpoint
        with advice_key("checkpoint_path"):  # a damaged file's advice names this keyword
            return load_module(
                load, cls, checkpoint_path, hparams_file, weights_only, kwargs, options
            )

    @cached_property
    def tokenizer_files(self) -> dict[str, str]:
        """The tokenizer as `save_pretrained` writes it, file name -> text, read once."""
        return tokenizer_file_texts(self.tokenizer) if self.tokenizer is not None else {}
