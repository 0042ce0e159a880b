"""Checks of `model.optimizer` and `model.scheduler`, before any work (`check_train_config`).

`model/optimizer=adamw` is one optimizer's keyword arguments; `model/optimizer=muon` is parts
(`muon`, `adamw`), each with its own optimizer and, optionally, its own schedule. Here: which
keys each takes (a swapped `_target_` keeps the old one's), what lmtrain passes itself
(`num_training_steps`: set in the config, it was silently replaced), and, for a module built
from Python, its partials. The values themselves are `lmtrain.utils.optimizer_values`' and
`lmtrain.utils.schedule_checks`' (torch and transformers read them only after the data is
prepared, or not at all: `maximize=no` trained by gradient ascent)."""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems, accepted_arguments
from lmtrain.utils.config_keys import locate
from lmtrain.utils.optimizer_values import (
    check_optimizer,
    check_whole_model_optimizer,
    trains_every_parameter,
)
from lmtrain.utils.partial_checks import (
    RUN_LENGTH,
    PartialProblems,
    check_optimizer_partial,
    check_scheduler_partial,
)
from lmtrain.utils.schedule_checks import check_scheduler

log = logging.getLogger(__name__)

# model/optimizer=adamw's class; its keys stay when only `_target_` is swapped.
ADAMW = "torch.optim.AdamW"
ADAMW_CONFIG = Path(__file__).resolve().parents[1] / "configs/model/optimizer/adamw.yaml"
# Hydra's own keys of a node to instantiate: not arguments of the target.
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
# What lmtrain passes each partial itself (lmtrain.models.optimizers): an optimizer its
# parameter groups, a schedule its optimizer (both first, by position) and the run's length.
OPTIMIZER_PASSES: tuple[str, ...] = ()
SCHEDULER_PASSES = ("num_training_steps",)
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def check_optimization(model: Mapping[str, Any], problems: Problems, max_steps: Any = None) -> None:
    """`model.optimizer` (one optimizer, or parts each with `optimizer` and `scheduler`) and
    `model.scheduler`; `max_steps` (the trainer's, when known) is the `num_training_steps` that
    lmtrain passes, which a schedule may also name itself."""
    optimizer = model.get("optimizer") or {}
    if "optimizer" in model and model["optimizer"] is None:  # the module's fallback
        log.warning(
            "model.optimizer is null: training with torch.optim.AdamW's own defaults (lr=0.001, "
            "weight_decay=0.01 on the decayed weights); pick one with model/optimizer=adamw or muon"
        )
    if not isinstance(optimizer, Mapping):
        return
    parts = {k: v for k, v in optimizer.items() if isinstance(v, Mapping) and "optimizer" in v}
    shared = model.get("scheduler")
    if not parts:
        check_optimizer("model.optimizer", optimizer, problems)
        check_arguments("model.optimizer", optimizer, OPTIMIZER_PASSES, problems)
        whole = trains_every_parameter(model.get("peft"), model.get("freeze"))
        if not whole or check_whole_model_optimizer("model.optimizer", optimizer, problems):
            warn_carried_keys(optimizer)
    for name, part in parts.items():
        key = f"model.optimizer.{name}"
        if isinstance(part["optimizer"], Mapping):
            check_optimizer(f"{key}.optimizer", part["optimizer"], problems)
            check_arguments(f"{key}.optimizer", part["optimizer"], OPTIMIZER_PASSES, problems)
        check_part_schedule(f"{key}.scheduler", part.get("scheduler"), shared, problems, max_steps)
    if isinstance(shared, Mapping):
        check_scheduler("model.scheduler", shared, shared, problems)
        check_arguments("model.scheduler", shared, SCHEDULER_PASSES, problems)
        refuse_passed("model.scheduler", shared, SCHEDULER_PASSES, problems, max_steps)


def check_part_schedule(
    key: str, own: Any, shared: Any, problems: Problems, max_steps: Any = None
) -> None:
    """A part's `scheduler` (`key`): null (model.scheduler), keys that change model.scheduler,
    or a partial of its own; its values checked as the schedule they build."""
    if own is None:
        return
    if not isinstance(own, Mapping):
        problems.add(
            f"{key}={own!r} is not a schedule: pass null (model.scheduler), keys that change "
            "model.scheduler ({num_warmup_steps: 0}), or a partial of its own (with _target_)"
        )
        return
    if "_target_" in own:
        built = own
    elif isinstance(shared, Mapping):
        built = {**shared, **own}  # keys that change model.scheduler
    else:
        problems.add(
            f"{key} changes keys of model.scheduler, which is null: give the part a scheduler "
            "partial of its own (with _target_)"
        )
        return
    check_scheduler(key, built, own, problems)
    check_arguments(key, built, SCHEDULER_PASSES, problems)
    refuse_passed(key, own, SCHEDULER_PASSES, problems, max_steps)


def refuse_passed(
    key: str,
    given: Mapping[str, Any],
    passed: tuple[str, ...],
    problems: Problems,
    max_steps: Any = None,
) -> None:
    """A key lmtrain passes itself (`num_training_steps`), set in the config: the call's
    keyword replaced it, silently, while the run's config recorded it. The value lmtrain passes
    anyway (`${trainer.max_steps}`) gets its own advice: dropping it changes nothing."""
    for name in (p for p in passed if p in given):
        value = given[name]
        if is_steps(max_steps) and value == max_steps:  # the module's check would refuse it
            problems.add(
                f"{key}.{name}={value!r} is what lmtrain passes already ({RUN_LENGTH}): "
                f"drop it (~{key}.{name})"
            )
            continue
        steps = value if is_steps(value) else "N"
        problems.add(
            f"{key}.{name}={value!r} would be replaced: {RUN_LENGTH}: drop it "
            f"(~{key}.{name}) and set trainer.max_steps={steps} for a schedule of that length"
        )


def is_steps(value: Any) -> bool:
    """Whether `value` is a number of steps above 0 (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def warn_carried_keys(optimizer: Mapping[str, Any]) -> None:
    """Say what a swapped optimizer class is given besides `lr`.

    `model.optimizer._target_=torch.optim.Adam` keeps model/optimizer=adamw's keys, and the
    new class takes them silently: nanoGPT's beta2 0.99, the fused kernel, and weight_decay=0.1,
    which Adam and SGD add to the gradient (an L2 penalty), not AdamW's decoupled decay."""
    target = optimizer.get("_target_")
    if not isinstance(target, str) or target == ADAMW:
        return
    # Only adamw's keys at adamw's values: an optimizer config of the user's own (SGD with its
    # momentum and weight_decay=0) was told to drop its own keys (rev_ext29).
    adamw = adamw_settings()
    kept = {
        k: v
        for k, v in optimizer.items()
        if k not in HYDRA_KEYS and k != "lr" and k in adamw and v == adamw[k]
    }
    if not kept:
        return
    decay = optimizer.get("weight_decay")
    l2 = ""
    if isinstance(decay, int | float) and decay > 0:
        l2 = (
            f"; weight_decay={decay} is what {target} makes of it (Adam and SGD: an L2 term "
            "added to the gradient, not AdamW's decoupled decay)"
        )
    settings = ", ".join(f"{k}={v}" for k, v in kept.items())
    log.warning(
        "model.optimizer._target_=%s is given %s (model/optimizer=adamw's keys stay when only "
        "_target_ changes)%s: drop what you do not mean with ~model.optimizer.<key>",
        target,
        settings,
        l2,
    )


@functools.cache
def adamw_settings() -> dict[str, Any]:
    """configs/model/optimizer/adamw.yaml's keys and values, as a swapped `_target_` keeps them."""
    settings = OmegaConf.to_container(OmegaConf.load(ADAMW_CONFIG))
    return settings if isinstance(settings, dict) else {}


def check_arguments(
    key: str, node: Mapping[str, Any], passed: tuple[str, ...], problems: Problems
) -> None:
    """The keys of an optimizer or schedule partial against its target's signature.

    Swapping `_target_` (`model.optimizer._target_=torch.optim.SGD`) keeps the old target's keys
    (AdamW's `betas`), and the partial is called only in `configure_optimizers`, after the data
    is prepared and the model built, as a traceback. `passed` are the keywords lmtrain adds."""
    target = node.get("_target_")
    called = locate(target)[0] if isinstance(target, str) else None
    if called is None:  # an unknown target: instantiate names it later
        return
    name = getattr(called, "__name__", target)
    if node.get("_partial_") is not True:
        what = "its parameter groups" if not passed else "its optimizer"
        problems.add(
            f"{key} ({target}) has no _partial_: true, which lmtrain needs to pass it {what}: "
            f"add {key}._partial_=true"
        )
        return
    given = [k for k in node if k not in HYDRA_KEYS]
    accepted = accepted_arguments(called)
    if accepted is not None:
        problems.unknown_arguments(key, given, accepted, name)
        for missing in (p for p in passed if p not in accepted):
            problems.add(f"{key}._target_={target} {schedule_hint(missing)}")
    try:
        parameters = list(inspect.signature(called).parameters.values())
    except (TypeError, ValueError):  # no signature to read
        return
    # The first is what lmtrain passes by position (the parameter groups, or the optimizer).
    required = [p.name for p in parameters[1:] if p.default is p.empty and p.kind not in VARIADIC]
    for missing in (r for r in required if r not in given and r not in passed):
        problems.add(f"{key}.{missing} is not set, and {name} needs it: pass +{key}.{missing}=...")


def schedule_hint(missing: str) -> str:
    """What to do about a schedule that does not take `missing` (`num_training_steps`)."""
    return (
        f"does not take {missing}, which lmtrain passes every schedule: use a schedule that "
        "takes it (transformers.get_cosine_schedule_with_warmup, get_linear_schedule_with_"
        f"warmup, get_wsd_schedule), or a function of (optimizer, {missing}, ...) that returns one"
    )


def check_factories(optimizer: Any, scheduler: Any, every_parameter_trains: bool = True) -> None:
    """`CausalLMModule`'s `optimizer` and `scheduler` from Python, where no config check ran:
    each must be callable (a class or a partial), not an object already built over other
    parameters, and the schedule must take `num_training_steps`. Both failed at the first
    step, as "'AdamW' object is not callable" or a TypeError inside Lightning. The values a
    partial binds are checked as the command line's (`lmtrain.utils.partial_checks`);
    `every_parameter_trains`: no LoRA or freeze (`trains_every_parameter`), where a Muon
    alone is refused before any data."""
    examples = {
        "optimizer": "functools.partial(torch.optim.AdamW, lr=1e-3)",
        "scheduler": "functools.partial(transformers.get_cosine_schedule_with_warmup, "
        "num_warmup_steps=100)",
    }
    for name, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
        if isinstance(factory, (str, Mapping)):  # a config's name or node, not a factory
            raise LMTrainError(
                f"{name}={factory!r:.60} is not callable: pass a class or a functools.partial, "
                f"e.g. {examples[name]} (config names and nodes are the command line's)"
            )
        if factory is not None and not callable(factory):
            raise LMTrainError(
                f"{name}={type(factory).__name__}(...) is built already, over other parameters: "
                f"pass its class or a functools.partial of it (e.g. functools.partial("
                "torch.optim.AdamW, lr=1e-3)); the module calls it with its own"
                + (" parameter groups" if name == "optimizer" else " optimizer")
            )
        if isinstance(factory, functools.partial):  # a misspelt keyword: TypeError at step 1
            func = getattr(factory.func, "__name__", repr(factory.func))
            takes = accepted_arguments(factory.func)
            for extra in (k for k in factory.keywords if takes is not None and k not in takes):
                close = difflib.get_close_matches(extra, sorted(takes), n=1)
                raise LMTrainError(
                    f"{name}=partial({func}, {extra}=...): {func} takes no {extra}"
                    + (f"; did you mean {close[0]}?" if close else "")
                )
    accepted = accepted_arguments(scheduler) if scheduler is not None else None
    for missing in (p for p in SCHEDULER_PASSES if accepted is not None and p not in accepted):
        name = getattr(getattr(scheduler, "func", scheduler), "__name__", repr(scheduler))
        raise LMTrainError(f"scheduler={name} {schedule_hint(missing)}")
    for name, factory, passed in (
        ("optimizer", optimizer, OPTIMIZER_PASSES),
        ("scheduler", scheduler, SCHEDULER_PASSES),
    ):
        unbound = unbound_parameters(factory, passed) if factory is not None else []
        if unbound:  # a TypeError at the first step, after the data and the model were built
            func = getattr(getattr(factory, "func", factory), "__name__", repr(factory))
            raise LMTrainError(
                f"{name}={func} needs {', '.join(unbound)}, which nothing passes: bind "
                f"{'it' if len(unbound) == 1 else 'them'} with functools.partial, e.g. "
                f"{examples[name]}"
            )
    problems = PartialProblems()  # the values, as the command line's model.optimizer/...
    if optimizer is not None:
        check_optimizer_partial("optimizer", optimizer, problems, every_parameter_trains)
    if scheduler is not None:
        check_scheduler_partial("scheduler", scheduler, problems)
    problems.raise_if_any()


def unbound_parameters(factory: Callable[..., Any], passed: tuple[str, ...]) -> list[str]:
    """The parameters `factory` requires that neither a partial binds nor lmtrain passes (the
    first, by position: the parameter groups, or the optimizer; and `passed`)."""
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # no signature to read
        return []
    named = [p for p in parameters if p.kind not in VARIADIC]
    return [p.name for p in named[1:] if p.default is p.empty and p.name not in passed]
