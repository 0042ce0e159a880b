"""bench.py's raw side: the PyTorch loop a researcher would write by hand, and what in a config
it cannot mirror.

It trains the module's own HF model from the same data module, with the module's own AdamW
groups, schedule and clipping, so that the only difference from the Lightning side is Lightning;
a config asking for what the loop does not do (another precision, accumulation, several
processes, a stop by epoch or time) is refused, not measured against a loop that ignores it.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from bench_stats import tokens_per_second
from lightning.pytorch.utilities import GradClipAlgorithmType
from omegaconf import DictConfig

# trainer.precision values the raw loop reproduces (bf16-mixed: autocast, as Lightning's).
RAW_PRECISIONS = ("32", "32-true", "bf16-mixed")


def raw_loop_problem(cfg: DictConfig) -> str | None:
    """What the raw loop would not do as the Lightning side does: it runs one process, on the
    device the trainer picks, in fp32 or bf16 autocast, one batch per optimizer step."""
    trainer = cfg.trainer
    precision = str(trainer.get("precision", "32-true"))
    if precision not in RAW_PRECISIONS:
        return (
            f"trainer.precision={precision}: the raw loop mirrors only "
            f"{', '.join(RAW_PRECISIONS)}: pass one of those"
        )
    if trainer.get("max_epochs") not in (None, -1) or trainer.get("max_time") is not None:
        key = "max_epochs" if trainer.get("max_epochs") not in (None, -1) else "max_time"
        return (
            f"trainer.{key}={trainer[key]}: Lightning would stop there, the raw loop runs "
            "--steps steps over as many epochs as they take: leave it out"
        )
    if trainer.get("accumulate_grad_batches", 1) != 1:
        return (
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: the raw loop "
            "steps on every batch: leave it at 1"
        )
    if str(trainer.get("devices", "auto")) not in ("auto", "1", "[0]"):
        return f"trainer.devices={trainer.devices}: the benchmark is one process: pass 1"
    if str(trainer.get("num_nodes", 1)) != "1":
        return f"trainer.num_nodes={trainer.num_nodes}: the benchmark is one process: pass 1"
    if cfg.get("global_batch_size") is not None:  # lmtrain.train turns it into accumulation
        return (
            f"global_batch_size={cfg.global_batch_size}: the benchmark steps on every batch: "
            "set data.batch_size instead"
        )
    return None


def gradient_clipping(trainer: DictConfig) -> Callable[[list[torch.Tensor]], Any] | None:
    """The clipping Lightning does under these trainer settings (`LightningModule.clip_gradients`
    and `Precision.clip_gradients`): none when gradient_clip_val is null or 0 (lmtrain's way to
    turn it off; `clip_grad_norm_` to 0 would zero every gradient), else by value when
    gradient_clip_algorithm says so, by global norm otherwise."""
    clip_val = trainer.get("gradient_clip_val") or 0.0
    if clip_val <= 0:
        return None
    algorithm = GradClipAlgorithmType(str(trainer.get("gradient_clip_algorithm") or "norm").lower())
    if algorithm == GradClipAlgorithmType.VALUE:
        return partial(torch.nn.utils.clip_grad_value_, clip_value=clip_val)
    return partial(torch.nn.utils.clip_grad_norm_, max_norm=clip_val)


def raw_device(cfg: DictConfig) -> torch.device:
    """The device Lightning's `accelerator` picks for one process: a GPU when asked for or
    (`auto`) present, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def epochs(loader: Any) -> Iterator[torch.Tensor]:
    """`loader`'s batches epoch after epoch, as Lightning's fit loop reads them: `set_epoch` on
    its sampler, then a new iterator (ResumableWindowSampler's epoch e+1 goes on in the stream
    where epoch e stopped, as under the trainer, instead of drawing epoch e's windows again)."""
    for epoch in itertools.count():
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        yield from loader


def run_raw(cfg: DictConfig, warmup: int) -> float:
    """The loop a researcher would write by hand: forward, loss, backward, clip, step, zero."""
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    device = raw_device(cfg)
    model = module.model.to(device).train()
    autocast = torch.autocast(device.type, torch.bfloat16, enabled="bf16" in cfg.trainer.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = module.optimizer_factory(
        [
            {"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    )
    scheduler = module.scheduler_factory(optimizer, num_training_steps=cfg.trainer.max_steps)
    clip = gradient_clipping(cfg.trainer)
    datamodule.setup("fit")
    times = []
    batches = epochs(datamodule.train_dataloader())
    for _ in range(cfg.trainer.max_steps):
        windows = next(batches).to(device)
        with autocast:  # the same model call as under Lightning (no KV cache)
            logits = module(windows[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten())
        loss.backward()
        if clip is not None:
            clip(params)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return tokens_per_second(times, warmup, cfg.data.batch_size * cfg.data.block_size)
