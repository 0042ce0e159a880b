"""Checks of `model.optimizer` and `model.scheduler`, before any work (`check_train_config`).

`model/optimizer=adamw` is one optimizer's keyword arguments; `model/optimizer=muon` is parts
(`muon`, `adamw`), each with its own optimizer and, optionally, its own schedule. torch and
transformers check some of these values only when the optimizer is built, after the data is
prepared, in words that name no key (`'<=' not supported between instances of 'float' and
'str'`), and some not at all: `min_lr_rate=-2` drove the learning rate to 0 for half a run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lmtrain.utils.checks import Problems


def check_optimization(model: Mapping[str, Any], problems: Problems) -> None:
    """`model.optimizer` (one optimizer, or parts each with `optimizer` and `scheduler`) and
    `model.scheduler`."""
    optimizer = model.get("optimizer") or {}
    if not isinstance(optimizer, Mapping):
        return
    parts = {k: v for k, v in optimizer.items() if isinstance(v, Mapping) and "optimizer" in v}
    if not parts:
        check_optimizer("model.optimizer", optimizer, problems)
    for name, part in parts.items():
        if isinstance(part["optimizer"], Mapping):
            check_optimizer(f"model.optimizer.{name}.optimizer", part["optimizer"], problems)
        if isinstance(part.get("scheduler"), Mapping):
            check_scheduler(f"model.optimizer.{name}.scheduler", part["scheduler"], problems)
    if isinstance(model.get("scheduler"), Mapping):
        check_scheduler("model.scheduler", model["scheduler"], problems)


def check_optimizer(key: str, optimizer: Mapping[str, Any], problems: Problems) -> None:
    """The settings AdamW and Muon share: lr, weight_decay, eps, betas, momentum."""
    problems.number(f"{key}.lr", optimizer.get("lr", 1e-3), low=0, low_open=True)
    problems.number(f"{key}.weight_decay", optimizer.get("weight_decay", 0), low=0)
    problems.number(f"{key}.eps", optimizer.get("eps", 1e-8), low=0, low_open=True)
    for i, beta in enumerate(optimizer.get("betas") or ()):
        problems.number(f"{key}.betas[{i}]", beta, low=0, high=1, high_open=True)
    if "momentum" in optimizer:
        problems.number(f"{key}.momentum", optimizer["momentum"], low=0, high=1, high_open=True)


def check_scheduler(key: str, scheduler: Mapping[str, Any], problems: Problems) -> None:
    """Warm-up steps (a count) and the floor of a cosine schedule (a share of the peak lr)."""
    if "num_warmup_steps" in scheduler:
        problems.integer(f"{key}.num_warmup_steps", scheduler["num_warmup_steps"], 0, True)
    if "min_lr_rate" in scheduler:
        problems.number(f"{key}.min_lr_rate", scheduler["min_lr_rate"], 0, 1, optional=True)
