"""Checks of `trainer.strategy`, in the launching process, before any rank starts.

A bad strategy setting was found only by the ranks: `process_group_backend=nccl` on a CPU-only
machine was a traceback on every rank, a timeout of 0 seconds (or less) a page of C++ frames
that blamed the network. And Lightning's strategies that start their processes by spawn or fork
(`ddp_spawn`, `ddp_fork`, `ddp_notebook`) cannot run lmtrain's training: spawn must pickle the
run's callables (a traceback), and a forked run trained to its end and then failed writing its
metrics. lmtrain starts ranks by running the command again (Lightning's `popen`), as
`trainer=ddp_cpu` and `trainer=ddp` do. What cannot train on sharded parameters
(`trainer=fsdp` with optimizer parts, LoRA or `nan_guard=skip`) was refused only by the ranks,
which leave the refused run's folder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lmtrain.utils.checks import Problems
from lmtrain.utils.config_keys import locate

# How lmtrain's ranks start: Lightning runs the command again for each (DDPStrategy's default).
POPEN = "popen"
# What cannot train on sharded parameters, in the words of this check and of the ranks' own
# (lmtrain.models: OptimizerParts.configure, lora.check_not_sharded, distributed.shard).
PARTS_UNDER_FSDP = (
    "model.optimizer with parts ({parts}) is not supported with trainer=fsdp: use "
    "model/optimizer=adamw, or trainer=ddp"
)
LORA_UNDER_FSDP = (
    "LoRA (model/peft=lora) does not run under trainer=fsdp: use trainer=ddp (each device holds "
    "the frozen base; only the adapters' gradients are all-reduced), or model/peft=none"
)
SKIP_UNDER_FSDP = (
    "model.nan_guard=skip is not supported with trainer=fsdp: use model.nan_guard=stop (saves "
    "last.ckpt and stops at a non-finite loss) or off"
)
# The model's optimizer of named parts (model/optimizer=muon), read by name: utils is below models.
OPTIMIZER_PARTS = "lmtrain.models.optimizers.OptimizerParts"
# `datetime.timedelta`'s arguments, as a config spells a span (`{_target_: datetime.timedelta,
# seconds: 300}`).
TIMEDELTA = "datetime.timedelta"
TIMEDELTA_KEYS = ("weeks", "days", "hours", "minutes", "seconds", "milliseconds", "microseconds")


def check_strategy(trainer: Mapping[str, Any], problems: Problems) -> None:
    """`trainer.strategy`: a registered name (not one that spawns or forks), or a mapping whose
    start method, process group backend and timeout can start here."""
    strategy = trainer.get("strategy")
    if isinstance(strategy, str):
        method = registered_start_method(strategy)
        if method not in (None, POPEN):
            problems.add(
                f"trainer.strategy={strategy} starts its processes by {method}, which lmtrain "
                "does not support: use trainer=ddp_cpu (or trainer=ddp)"
            )
        return
    if not isinstance(strategy, Mapping):
        return
    method = strategy.get("start_method", POPEN)
    if method != POPEN:
        problems.add(
            f"trainer.strategy.start_method={method!r} starts the processes by {method}, which "
            "lmtrain does not support: drop it (popen, the default, runs the command again for "
            "each rank), or use trainer=ddp_cpu (or trainer=ddp)"
        )
    problems.extend(backend_problems(strategy.get("process_group_backend")))
    if "timeout" in strategy:
        check_timeout(strategy["timeout"], problems)


def check_sharded_model(
    trainer: Mapping[str, Any], model: Mapping[str, Any], problems: Problems
) -> None:
    """Optimizer parts, LoRA and skipped micro-batches under a strategy that shards the model
    (`trainer=fsdp`, any ModelParallelStrategy: the module shards on its device mesh). The
    ranks refuse them too (`OptimizerParts.configure`, `lora.check_not_sharded`,
    `distributed.shard`, for the Python API), with these words, but only once they have
    started: too late to remove the run's folder."""
    if not shards_model(trainer.get("strategy")):
        return
    optimizer = model.get("optimizer")
    if isinstance(optimizer, Mapping) and is_class(optimizer.get("_target_"), OPTIMIZER_PARTS):
        parts = ", ".join(k for k in optimizer if not str(k).startswith("_"))
        problems.add(PARTS_UNDER_FSDP.format(parts=parts))
    peft = model.get("peft")  # as lmtrain.models.lora_settings reads it: empty or none is none
    if peft == "lora" or (isinstance(peft, Mapping) and peft):
        problems.add(LORA_UNDER_FSDP)
    if model.get("nan_guard") == "skip":
        problems.add(SKIP_UNDER_FSDP)


def shards_model(strategy: Any) -> bool:
    """Whether `trainer.strategy` is a ModelParallelStrategy (lmtrain's FSDP2Strategy, or a
    subclass): the module gets a device mesh and shards the model on it."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    target = strategy.get("_target_") if isinstance(strategy, Mapping) else None
    found = locate(target)[0] if isinstance(target, str) else None
    return isinstance(found, type) and issubclass(found, ModelParallelStrategy)


def is_class(target: Any, path: str) -> bool:
    """Whether `target` names the class at `path` or a subclass of it (a bad path: no)."""
    found = locate(target)[0] if isinstance(target, str) else None
    return isinstance(found, type) and any(
        f"{c.__module__}.{c.__qualname__}" == path for c in found.__mro__
    )


def registered_start_method(name: str) -> str | None:
    """The start method Lightning's registered strategy `name` is made with (None when it is
    not registered, or is made without one; DDPStrategy's default is popen)."""
    from lightning.pytorch.strategies import StrategyRegistry

    if name not in StrategyRegistry:
        return None
    # The entry as registered (StrategyRegistry.get would build the strategy).
    method = StrategyRegistry[name].get("init_params", {}).get("start_method")
    return method if isinstance(method, str) else None


def check_timeout(timeout: Any, problems: Problems) -> None:
    """A `datetime.timedelta` mapping of numbers that adds up to a positive span: 0 or less was a
    socket timeout blamed on the network, on every rank. Null is torch's default (30 minutes)."""
    key = "trainer.strategy.timeout"
    if timeout is None:
        return
    if not isinstance(timeout, Mapping) or timeout.get("_target_") != TIMEDELTA:
        problems.add(
            f"{key}={timeout!r} is not a time span: pass {key}._target_={TIMEDELTA} with "
            f"{key}.seconds=<seconds> (as trainer=ddp_cpu does), or null"
        )
        return
    parts = {k: v for k, v in timeout.items() if k != "_target_"}
    problems.unknown_arguments(key, parts, TIMEDELTA_KEYS, TIMEDELTA)
    numbers = True
    for part, value in parts.items():  # each may be negative: minutes=5, seconds=-30
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            problems.add(f"{key}.{part}={value!r} is not a number: pass a number of {part}")
            numbers = False
    if not numbers or not set(parts) <= set(TIMEDELTA_KEYS):
        return
    given = ", ".join(f"{k}={v!r}" for k, v in parts.items()) or "nothing set"
    example = f"pass e.g. {key}.seconds=300"
    try:
        seconds = timedelta(**parts).total_seconds()
    except OverflowError:  # inf, or beyond 999,999,999 days
        problems.add(f"{key} ({given}) is longer than a time span can be: {example}")
        return
    if seconds > 0:
        return
    advice = f"must be positive (how long a rank waits for the others): {example}"
    if len(parts) == 1:
        part, value = next(iter(parts.items()))
        problems.add(f"{key}.{part}={value!r} {advice}")
    else:
        problems.add(f"{key} ({given}) adds up to {seconds:g} seconds, which {advice}")


def backend_problems(backend: Any) -> list[str]:
    """Why `process_group_backend` cannot start here (empty if it can): null, a backend name or
    torch's per-device form `cpu:gloo,cuda:nccl`, each backend built into this torch (NCCL also
    needs a GPU)."""
    key = "trainer.strategy.process_group_backend"
    if backend is None:
        return []
    if not isinstance(backend, str) or not backend:
        return [f"{key}={backend!r} is not a backend name: pass gloo, nccl, or null"]
    for name in (part.split(":")[-1].strip().lower() for part in backend.split(",")):
        usable = dist.is_backend_available(name) and (name != "nccl" or torch.cuda.is_available())
        if not usable:
            why = (
                "NCCL needs GPUs and a CUDA build of torch"
                if name == "nccl"
                else "not built into torch"
            )
            return [
                f"{key}={backend!r}: {name} is not available on this machine ({why}): pass gloo "
                "for CPU processes (as trainer=ddp_cpu and trainer=fsdp_cpu do), or null"
            ]
    return []
