#!/usr/bin/env python
"""nanoGPT's baby Shakespeare recipe with transformers' `Trainer`: the reference for bench_recipe.

What a researcher would write with `Trainer` alone, so that `scripts/bench_recipe.py` can time
it beside nanoGPT and `lmtrain.train experiment=shakespeare_char` on the same recipe: a fresh HF
GPT-2 (4 layers x 4 heads x 128 wide, context 64, exact GELU, SDPA attention, no dropout, one
token per character of the file), batch 12, AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on
what `Trainer` decays: everything but biases and LayerNorms), 100 warm-up steps then a cosine to
1e-4, clipping at 1.0, fp32 on the CPU, no checkpoints and no reporting. The AdamW kernel is
Trainer's default (`adamw_torch_fused` on torch >= 2.8); `--optim adamw_torch` picks PyTorch's
default one, which nanoGPT and lmtrain (model.optimizer.fused=null) run on a CPU. Train windows
are 65 characters (64 inputs, 64 shifted targets) at random offsets of the first 90% of the
characters (nanoGPT's split), drawn by `Trainer`'s own shuffled sampler; at the end the whole val
split is evaluated in back-to-back windows and `val_loss=<x>` is printed, as lmtrain measures it.

    python scripts/trainer_recipe.py --data <Tiny Shakespeare input.txt>
    python scripts/trainer_recipe.py --data input.txt --steps 20      # a smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    Trainer,
    TrainingArguments,
    set_seed,
)


class TrainWindows(Dataset[dict[str, torch.Tensor]]):
    """A window at every start offset of the train split; `Trainer`'s sampler picks which ones."""

    def __init__(self, tokens: np.ndarray, block_size: int) -> None:
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, start: int) -> dict[str, torch.Tensor]:
        window = torch.from_numpy(self.tokens[start : start + self.block_size + 1])
        return {"input_ids": window[:-1], "labels": window[1:]}


class ValWindows(TrainWindows):
    """Back-to-back windows at 0, block_size, ...: every val character after the first is a
    target exactly once (lmtrain's FixedWindows)."""

    def __len__(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return super().__getitem__(index * self.block_size)


def next_char_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross entropy of already shifted labels: HF's own loss shifts them again and would drop
    one target per window, so the loss is computed here on all 64, as nanoGPT and lmtrain do."""
    logits = outputs.logits.flatten(0, 1).float()
    if num_items_in_batch is None:
        return F.cross_entropy(logits, labels.flatten())
    # Trainer passes the targets of the whole (accumulated) batch: normalize by them.
    return F.cross_entropy(logits, labels.flatten(), reduction="sum") / num_items_in_batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="Tiny Shakespeare's input.txt")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (max_steps)")
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--min-lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--logging-steps", type=int, default=25, help="as lmtrain's trainer")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--optim", default=None, help="TrainingArguments.optim (default: Trainer's own default)"
    )
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"--data {args.data} is not a file: pass Tiny Shakespeare's input.txt")

    text = args.data.read_text(encoding="utf-8")
    alphabet = sorted(set(text))  # nanoGPT's vocabulary: the characters of the file
    lookup = np.zeros(max(map(ord, alphabet)) + 1, dtype=np.int64)
    lookup[[ord(c) for c in alphabet]] = np.arange(len(alphabet))
    tokens = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    n_train = int(len(tokens) * 0.9)  # nanoGPT's split: the first 90% of the characters

    set_seed(args.seed)  # the initial weights; Trainer seeds again for the data order
    config = GPT2Config(
        vocab_size=len(alphabet),
        n_positions=args.block_size,
        n_embd=128,
        n_layer=4,
        n_head=4,
        activation_function="gelu",  # exact GELU, as nanoGPT and lmtrain's gpt2_tiny
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,  # nanoGPT's vocabulary has no special tokens
        eos_token_id=None,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")

    with tempfile.TemporaryDirectory() as output_dir:
        optim = {"optim": args.optim} if args.optim else {}
        training_args = TrainingArguments(
            output_dir=output_dir,  # nothing is saved there; Trainer wants one
            max_steps=args.steps,
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size,
            learning_rate=args.lr,
            lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr": args.min_lr},
            warmup_steps=args.warmup,
            max_grad_norm=1.0,
            adam_beta1=0.9,
            adam_beta2=0.99,
            weight_decay=0.1,
            use_cpu=True,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            logging_steps=args.logging_steps,
            prediction_loss_only=True,  # evaluate() keeps no logits
            seed=args.seed,
            **optim,
        )
        val_windows = ValWindows(tokens[n_train:], args.block_size)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=TrainWindows(tokens[:n_train], args.block_size),
            eval_dataset=val_windows,
            compute_loss_func=next_char_loss,
        )
        train_output = trainer.train()
        metrics = trainer.evaluate()
    optim_name = getattr(training_args.optim, "value", training_args.optim)
    train_s = train_output.metrics["train_runtime"]
    print(f"optim={optim_name} train_s={train_s:.3f} val_windows={len(val_windows)}")
    print(f"val_loss={metrics['eval_loss']:.4f}")


if __name__ == "__main__":
    main()
