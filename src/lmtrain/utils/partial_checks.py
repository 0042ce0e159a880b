"""The keywords a Python `functools.partial` binds (`CausalLMModule`'s `optimizer` and
`scheduler`, an `OptimizerParts` part's), checked as the command line's `model.optimizer` and
`model.scheduler` are (docs/python.md).

From Python no config check ran: `maximize="no"` trained by gradient ascent with exit 0,
`min_lr_rate=-2` held the learning rate at 0, a negative warm-up or learning rate reached
torch or transformers only at the first step, and `num_training_steps=1000` was silently
replaced by the run's length.
"""

from __future__ import annotations

import functools
import numbers
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from lmtrain.utils.checks import Problems
from lmtrain.utils.optimizer_values import (
    MUON_ADVICE,
    check_optimizer,
    follows_torch_rules,
    muon_over_whole_model,
)
from lmtrain.utils.schedule_checks import check_scheduler

# What lmtrain passes every schedule itself (lmtrain.models.optimizers): the run's length.
TRAINING_STEPS = "num_training_steps"
RUN_LENGTH = (
    "lmtrain passes every schedule num_training_steps itself, the run's length (the trainer's "
    "max_steps, or the steps its max_epochs hold)"
)

# The command line's advice for a number typed as text (`lmtrain.utils.checks.text_hint`), whose
# Hydra interpolation means nothing to a Python caller: kept is the number to pass instead.
HYDRA_TEXT_HINT = re.compile(r" \(it is text, as from \$\{oc\.env:.*?, or [^=\s]+=([^)\s]+)\)")


class PartialProblems(Problems):
    """`Problems` worded for a Python caller: a number passed as text gets "pass the number"."""

    def add(self, message: str) -> None:
        super().add(HYDRA_TEXT_HINT.sub(r" (text: pass the number \1)", message))


def bound(factory: Any) -> tuple[Callable[..., Any] | None, dict[str, Any]]:
    """The function a partial calls and the keywords it binds, as plain values (a one-element
    tensor or a numpy number or bool as the Python one it holds); a class or function binds
    none."""
    if isinstance(factory, functools.partial):
        return factory.func, {k: plain(v) for k, v in factory.keywords.items()}
    return (factory if callable(factory) else None), {}


def plain(value: Any) -> Any:
    """`value` as the config checks read it: torch takes `lr=torch.tensor(1e-3)` and numpy
    numbers and bools (`amsgrad=np.True_`), which are no Python int, float or bool."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool | int):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, tuple | list):
        return type(value)(plain(v) for v in value)
    return value


def name_of(called: Any) -> str:
    return getattr(called, "__name__", repr(called))


def check_optimizer_partial(key: str, factory: Any, problems: Problems, whole: bool) -> None:
    """An optimizer partial's values under `key`, by torch's rules where they are its class's
    (`follows_torch_rules`); `whole`: it trains every parameter (the module's `optimizer`, no
    LoRA or freeze), where a Muon is refused with the parts that give it the matrices."""
    called, keywords = bound(factory)
    if called is None or not follows_torch_rules(called):
        return
    check_optimizer(key, keywords, problems, called)
    if whole and muon_over_whole_model(called):
        problems.add(
            f"{key}={name_of(called)} would train every parameter, but {MUON_ADVICE}: pass "
            "optimizer=OptimizerParts(muon={'params': 'block_matrices', 'optimizer': ...}, "
            "adamw={'params': 'rest', 'optimizer': ...}) (lmtrain.models.optimizers), as "
            "model/optimizer=muon does"
        )


def check_scheduler_partial(key: str, factory: Any, problems: Problems) -> None:
    """A schedule partial's values under `key` (a part's keys that change the module's
    schedule, as a mapping, too): warm-up, the cosine's floor, and no `num_training_steps`."""
    if isinstance(factory, Mapping):
        called, keywords = None, {k: plain(v) for k, v in factory.items()}
    else:
        called, keywords = bound(factory)
    if TRAINING_STEPS in keywords:
        steps = keywords[TRAINING_STEPS]
        length = steps if isinstance(steps, int) and steps > 0 else "N"
        problems.add(
            f"{key} binds {TRAINING_STEPS}={steps!r}, which the module would replace: "
            f"{RUN_LENGTH}: leave it out and pass L.Trainer(max_steps={length}) for a schedule "
            "of that length"
        )
    target = dotted_path(called)
    node = {"_target_": target, **keywords} if target else keywords
    check_scheduler(key, node, node, problems)


def dotted_path(called: Any) -> str | None:
    """`called`'s import path, as a config's `_target_` names it (check_scheduler reads the
    schedule's parameters from it); None for a function not reachable by that name (a local
    one, a lambda)."""
    module, qualname = getattr(called, "__module__", None), getattr(called, "__qualname__", "")
    found: Any = sys.modules.get(module) if isinstance(module, str) else None
    for attribute in qualname.split(".") if found is not None else ():
        found = getattr(found, attribute, None)
    return f"{module}.{qualname}" if found is called and called is not None else None
