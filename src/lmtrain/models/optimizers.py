"""The optimizer and learning-rate schedule of `CausalLMModule`, from its trainable parameters.

The module hands over its model (whose trainable parameters train) and the names that get
weight decay (chosen on the unsharded model); this module groups them and builds the optimizer
and the schedule the config describes. Kept apart from the module so that optimizers with several
parameter groups of their own (Muon for matrices, AdamW for the rest) plug in here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def decay_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], decay_names: set[str]
) -> list[dict[str, Any]]:
    """Weight decay on matrices only (embeddings, linear weights), not on biases and norm gains."""
    named = list(named)
    return [
        {"name": "decay", "params": [p for n, p in named if n in decay_names]},
        {
            "name": "no_decay",
            "params": [p for n, p in named if n not in decay_names],
            "weight_decay": 0.0,
        },
    ]


def configure_optimizers(
    model: torch.nn.Module,
    decay_names: set[str],
    optimizer_factory: Callable[..., Optimizer],
    scheduler_factory: Callable[..., LRScheduler] | None,
    num_training_steps: int,
) -> dict[str, Any]:
    """Lightning's `configure_optimizers` answer: the optimizer over the trainable parameters
    of `model`, grouped, and the scheduler stepped once per optimizer step."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = optimizer_factory(decay_groups(named, decay_names))
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    scheduler = scheduler_factory(optimizer, num_training_steps=num_training_steps)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
    }
