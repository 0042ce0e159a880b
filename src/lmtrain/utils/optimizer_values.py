"""Checks of an optimizer's values (lr, betas, eps, weight_decay, yes/no arguments), the same for
a config node (`model.optimizer`, a part's `optimizer`) and a Python partial's keywords.

torch checks some of them only when the optimizer is built, after the data is prepared, in words
that name no key (`'<=' not supported between instances of 'float' and 'str'`), and some not at
all: torch reads a yes/no argument by truthiness, so `maximize=no` (the string "no") trained by
gradient ascent. `fused` with `foreach` and a Muon over the whole model failed only there too.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch.optim import Muon

from lmtrain.utils.checks import Problems, call_parameters
from lmtrain.utils.config_keys import locate

# `bool | None` written as a string (a class under `from __future__ import annotations`).
OPTIONAL_BOOL_TEXT = {"bool|None", "None|bool", "Optional[bool]", "typing.Optional[bool]"}
# torch.optim.Muon's `adjust_lr_fn` values (its docstring; null is "original").
MUON_LR_ADJUSTMENTS = ("original", "match_rms_adamw")
# Why a Muon cannot be the whole model's optimizer (torch: "Muon only supports 2D parameters").
MUON_ADVICE = "Muon trains 2-D matrices only, and the model's norms and biases are 1-D"


def target_of(node: Mapping[str, Any], called: Callable[..., Any] | None) -> Any:
    """What `node` builds: `called` (a Python partial's function), or its `_target_`'s object."""
    if called is not None:
        return called
    target = node.get("_target_")
    return locate(target)[0] if isinstance(target, str) else None


def check_optimizer(
    key: str,
    optimizer: Mapping[str, Any],
    problems: Problems,
    called: Callable[..., Any] | None = None,
) -> None:
    """The settings AdamW and Muon share: lr, weight_decay, eps, betas, momentum; the yes/no
    arguments of the class (`called`, or the node's `_target_`)."""
    problems.number(f"{key}.lr", optimizer.get("lr", 1e-3), low=0, low_open=True)
    problems.number(f"{key}.weight_decay", optimizer.get("weight_decay", 0), low=0)
    problems.number(f"{key}.eps", optimizer.get("eps", 1e-8), low=0, low_open=True)
    betas = optimizer.get("betas")
    if betas is not None and (isinstance(betas, str) or not isinstance(betas, Sequence)):
        problems.add(f"{key}.betas={betas!r} is not a pair: pass [beta1, beta2], e.g. [0.9, 0.95]")
    elif betas is not None and len(betas) != 2:  # torch: IndexError, or at the first step
        problems.add(
            f"{key}.betas={list(betas)} has {len(betas)} value{'s' * (len(betas) != 1)}: pass two, "
            "[beta1, beta2], e.g. [0.9, 0.95]"
        )
    else:
        for i, beta in enumerate(betas or ()):
            problems.number(f"{key}.betas[{i}]", beta, low=0, high=1, high_open=True)
    if "momentum" in optimizer:
        problems.number(f"{key}.momentum", optimizer["momentum"], low=0, high=1, high_open=True)
    if "ns_steps" in optimizer:  # Muon's Newton-Schulz iterations: 0 or fewer do not orthogonalize
        problems.integer(f"{key}.ns_steps", optimizer["ns_steps"], minimum=1)
    if optimizer.get("adjust_lr_fn") is not None:  # Muon's; torch refuses others once built
        problems.choice(f"{key}.adjust_lr_fn", optimizer["adjust_lr_fn"], MUON_LR_ADJUSTMENTS)
    if optimizer.get("fused") is True and optimizer.get("foreach") is True:  # torch: RuntimeError
        problems.add(
            f"{key}.fused=true with {key}.foreach=true: torch runs one implementation: drop "
            f"one ({key}.foreach=null, or {key}.fused=null)"
        )
    check_yes_no(key, optimizer, problems, called)


def check_yes_no(
    key: str,
    optimizer: Mapping[str, Any],
    problems: Problems,
    called: Callable[..., Any] | None = None,
) -> None:
    """Each yes/no argument of the optimizer's class is a real true or false.

    Hydra passes `maximize=no`, `nesterov=no` or `fused=0` as a string or a number, and torch
    reads them by truthiness: gradient ascent with exit 0, Nesterov and the fused kernel kept
    on, or (amsgrad) a traceback at the first step. The arguments come from the class's
    signature (`called`, or the node's `_target_`), so a swapped `_target_` (SGD) is checked by
    its own; `fused` and `foreach` (`bool | None`) also take null, torch's own choice."""
    called = target_of(optimizer, called)
    if called is None:  # an unknown target: check_arguments or instantiate names it
        return
    for name, nullable in yes_no_parameters(called).items():
        value = optimizer.get(name)
        if name not in optimizer or isinstance(value, bool) or (nullable and value is None):
            continue
        if nullable:
            problems.add(
                f"{key}.{name}={value!r} is not true, false or null: pass {key}.{name}=true, "
                f"false, or null (torch's own choice)"
            )
        else:
            problems.boolean(f"{key}.{name}", value)


def yes_no_parameters(called: Callable[..., Any]) -> dict[str, bool]:
    """The yes/no parameters of `called`, each with whether it takes None: a bool default
    (amsgrad, maximize, nesterov), or `bool | None` with a None default (fused, foreach)."""
    found: dict[str, bool] = {}
    for parameter in call_parameters(called)[0]:
        if isinstance(parameter.default, bool):
            found.setdefault(parameter.name, False)
        elif parameter.default is None and optional_bool(parameter.annotation):
            found.setdefault(parameter.name, True)
    return found


def optional_bool(annotation: Any) -> bool:
    """Whether `annotation` is `bool | None` (or `Optional[bool]`), as an object or as text."""
    if isinstance(annotation, str):
        return annotation.replace(" ", "") in OPTIONAL_BOOL_TEXT
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and set(typing.get_args(annotation)) == {bool, type(None)}


def muon_over_whole_model(called: Any) -> bool:
    """Whether `called` is a Muon (torch's, or lmtrain's BatchedMuon): it trains 2-D matrices
    only, and every model has 1-D biases and norm gains ("Muon only supports 2D parameters")."""
    return isinstance(called, type) and issubclass(called, Muon)


def follows_torch_rules(called: Any) -> bool:
    """Whether `check_optimizer`'s value rules (AdamW's eps, a pair of betas, ...) are `called`'s
    own: torch.optim's classes and lmtrain's Muon. Another class (transformers' Adafactor takes
    `eps=(1e-30, 1e-3)`) has rules of its own: its keyword names alone are checked."""
    module = getattr(called, "__module__", None) or ""
    return module.startswith(("torch.optim", "lmtrain.models.muon")) or muon_over_whole_model(
        called
    )


def trains_every_parameter(peft: Any, freeze: Any) -> bool:
    """Whether the optimizer of `model.optimizer` gets every parameter: not with LoRA (`peft`:
    the adapters alone train) or a `freeze` that stops some. There the trainable set is known
    only once the model is built, and torch's own refusal (one line, `build_optimizer`) answers
    a Muon given a 1-D one."""
    lora = not (peft is None or peft == "none" or (isinstance(peft, Mapping) and not peft))
    frozen = isinstance(freeze, Mapping) and (
        freeze.get("embeddings") is True
        or (type(freeze.get("first_n_blocks")) is int and freeze["first_n_blocks"] > 0)
    )
    return not (lora or frozen)


def check_whole_model_optimizer(key: str, optimizer: Mapping[str, Any], problems: Problems) -> bool:
    """`model.optimizer` of one class trains every parameter: a Muon there is refused, with
    the parts config that gives it the blocks' matrices (`model/optimizer=muon`). Whether it
    passed."""
    called = target_of(optimizer, None)
    if not muon_over_whole_model(called):
        return True
    problems.add(
        f"{key}._target_={optimizer['_target_']} would train every parameter, but "
        f"{MUON_ADVICE}: use model/optimizer=muon (Muon for the blocks' matrices, AdamW for "
        "the rest; set its lr with model.optimizer.muon.optimizer.lr=...)"
    )
    return False
