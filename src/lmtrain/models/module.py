"""`CausalLMModule`: a Hugging Face causal LM, its next-token loss and AdamW, as a LightningModule.

Each batch is one int64 tensor of windows `block_size + 1` tokens long; the model reads
`window[:, :-1]` and predicts `window[:, 1:]`, which is exactly the shift HF applies to `labels=`.
The checkpoint carries the HF config and the tokenizer files, so `lmtrain.eval`, `lmtrain.generate`
and `lmtrain.export` need nothing but the `.ckpt` file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.hf import build_causal_lm, freeze_parameters

CHECKPOINT_KEY = "lmtrain"


class CausalLMModule(LightningModule):
    def __init__(
        self,
        model_type: str | None = "gpt2",
        config: dict[str, Any] | None = None,
        pretrained: str | None = None,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., LRScheduler] | None = None,
        attn_implementation: str | None = "sdpa",
        compile: bool = False,
        freeze: Mapping[str, Any] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        model: PreTrainedModel | None = None,
    ) -> None:
        """`optimizer` and `scheduler` are partials (Hydra `_partial_: true`): the module hands
        them the parameter groups, and the scheduler the number of optimizer steps. `freeze`
        holds `embeddings` and `first_n_blocks` (fine-tuning). `model` wraps an HF model already
        built (evaluation of a checkpoint or an export)."""
        super().__init__()
        # Plain values only, so checkpoints load with torch.load(weights_only=True).
        ignore = ["optimizer", "scheduler", "tokenizer", "model"]
        self.save_hyperparameters(ignore=ignore, logger=False)
        self.tokenizer = tokenizer
        self.model = model or build_causal_lm(
            model_type,
            config,
            pretrained,
            attn_implementation,
            vocab_size=len(tokenizer) if tokenizer is not None else None,
            eos_token_id=tokenizer.eos_token_id if tokenizer is not None else None,
        )
        freeze = dict(freeze or {})
        unknown = sorted(set(freeze) - {"embeddings", "first_n_blocks"})
        if unknown:
            raise LMTrainError(
                f"model.freeze has unknown keys {unknown}: use embeddings and first_n_blocks"
            )
        freeze_parameters(self.model, **freeze)
        self.optimizer_factory = optimizer or torch.optim.AdamW
        self.scheduler_factory = scheduler
        self.val_loss = MeanMetric()
        # The resolved run config (plain values), set by lmtrain.train and stored in checkpoints
        # so that eval can rebuild the data the model was trained on.
        self.run_config: dict[str, Any] | None = None
        # Tokens read so far, for the checkpoint (and so the export's model card).
        self.tokens_seen = 0.0
        # Forward + backward FLOPs of one micro-batch, counted once by lmtrain.train.
        self.train_flops_per_batch: int | None = None

    # -- forward and loss ---------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits for every position of `input_ids`."""
        return self.model(input_ids=input_ids).logits

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross entropy over every position (computed in float32, as HF does)."""
        inputs, targets = windows[:, :-1], windows[:, 1:]
        logits = self(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.loss(batch)
        # Tensors, not floats: Lightning syncs them to the host only every log_every_n_steps.
        self.log("train/loss", loss, prog_bar=True)
        # Derived, not counted: windows have a fixed shape, so after N optimizer steps every
        # rank has read N * accumulate micro-batches of this size (and a resume stays exact).
        micro_batch_tokens = batch.shape[0] * (batch.shape[1] - 1)
        trainer = self.trainer
        steps = self.global_step + 1
        tokens = micro_batch_tokens * trainer.accumulate_grad_batches * trainer.world_size * steps
        self.tokens_seen = float(tokens)
        self.log("tokens_seen", self.tokens_seen)
        return loss

    @property
    def flops_per_batch(self) -> int | None:
        """FLOPs of the current micro-batch, read by the throughput monitor: forward and
        backward while training, the forward alone (a third: backward costs two forwards)
        while validating."""
        if self.train_flops_per_batch is None or self.training:
            return self.train_flops_per_batch
        return self.train_flops_per_batch // 3

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Weighted by windows, so a short last batch counts for what it holds; MeanMetric syncs
        # over DDP ranks when computed.
        self.val_loss.update(self.loss(batch), weight=batch.shape[0])

    def on_validation_epoch_end(self) -> None:
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", loss.exp())

    # -- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW with weight decay on matrices only (embeddings, linear weights), not on
        biases and norm gains; then the scheduler, stepped once per optimizer step."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"name": "decay", "params": [p for p in params if p.dim() >= 2]},
            {"name": "no_decay", "params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        optimizer = self.optimizer_factory(groups)
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer, num_training_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
        }

    def configure_model(self) -> None:
        # Compiling the inner HF model in place (nn.Module.compile) keeps state_dict names
        # clean, so checkpoints and exports load into an uncompiled model.
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile()
            self._compiled = True

    # -- checkpoint contents ------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Add what turns the weights back into an HF model and describes them (model card).

        `val_loss` is the latest validation's, which may have used limit_val_batches.
        """
        val_loss = self.trainer.callback_metrics.get("val/loss") if self._trainer else None
        checkpoint[CHECKPOINT_KEY] = {
            "hf_config": self.model.config.to_dict(),
            "tokenizer_files": self.tokenizer_files,
            "run_config": self.run_config,
            "tokens_seen": self.tokens_seen,
            "val_loss": None if val_loss is None else float(val_loss),
        }

    @cached_property
    def tokenizer_files(self) -> dict[str, str]:
        """The tokenizer as `save_pretrained` writes it, file name -> text, read once."""
        if self.tokenizer is None:
            return {}
        with tempfile.TemporaryDirectory() as folder:
            self.tokenizer.save_pretrained(folder)
            return {p.name: p.read_text() for p in Path(folder).iterdir() if p.is_file()}
