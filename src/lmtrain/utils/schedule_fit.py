"""How a learning-rate schedule fits the run's steps: the lines that warn when it does not.

A warm-up not shorter than the run never reaches the configured learning rate. transformers'
`get_wsd_schedule` (warm-up, stable, decay) makes its stable phase `num_training_steps -
num_warmup_steps - num_decay_steps`: a decay longer than the run leaves makes that negative, and
the rate decays from part-way before it ever peaks (red team api23: warm-up 5 and decay 30 in 20
steps peaked at 80% of lr, then fell from 50%). With `num_stable_steps` set it ignores the run's
length: the run ends before the decay does, or trains its last steps at the floor.

Not refused: debug runs (`debug=fdr`, a few steps) are meant short. The schedules are read from
the run config (`model.scheduler`, a Muon part's own) or, from Python, from the partials the
module was given (`python_schedules`), so that both name the keys their user typed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from lmtrain.utils.config_keys import locate

# The keys a part's `scheduler` may change of the model's schedule that set its phases' lengths.
PHASE_KEYS = ("num_warmup_steps", "num_stable_steps", "num_decay_steps")
WSD = "get_wsd_schedule"


def schedules(model: Mapping[str, Any], prefix: str = "model.") -> list[tuple[str, Any, list[str]]]:
    """(the key that sets it, the schedule's keys, the learning rates it scales) of each schedule
    of `model` (a run config's `model`); `prefix`: "model." on the command line, "" from Python
    (the module's `scheduler=` and `optimizer=`)."""
    shared = model.get("scheduler") if isinstance(model.get("scheduler"), Mapping) else None
    optimizer = model.get("optimizer")
    parts = {
        name: part
        for name, part in (optimizer.items() if isinstance(optimizer, Mapping) else [])
        if isinstance(part, Mapping) and "params" in part
    }
    if not parts:
        return [(f"{prefix}scheduler", shared or {}, [f"{prefix}optimizer.lr"])]
    found: dict[str, tuple[Any, list[str]]] = {}
    for name, part in parts.items():
        own = part.get("scheduler")
        key, schedule = f"{prefix}scheduler", shared
        if isinstance(own, Mapping) and ("_target_" in own or set(PHASE_KEYS) & set(own)):
            key = f"{prefix}optimizer.{name}.scheduler"
            schedule = own if "_target_" in own else {**(shared or {}), **own}
        found.setdefault(key, (schedule or {}, []))[1].append(
            f"{prefix}optimizer.{name}.optimizer.lr"
        )
    return [(key, schedule, rates) for key, (schedule, rates) in found.items()]


def python_schedules(
    scheduler: Callable[..., Any] | None, parts: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Any]:
    """A run config's `model` for the partials a module was given from Python: each schedule as
    its keywords and its function (`_target_`), each part's as its own or the keys it changes."""

    def keys(factory: Any) -> Any:
        if isinstance(factory, functools.partial):
            return {"_target_": factory.func, **factory.keywords}
        return {"_target_": factory} if callable(factory) else factory

    optimizer = {
        name: {"params": part.get("params"), "scheduler": keys(part.get("scheduler"))}
        for name, part in (parts or {}).items()
    }
    return {"scheduler": keys(scheduler), "optimizer": optimizer}


def misfits(
    steps: int, run_length: str, model: Mapping[str, Any], prefix: str = "model."
) -> list[str]:
    """One line for each schedule of `model` that does not fit a run of `steps` optimizer steps
    (`run_length` says where that number comes from)."""
    lines = []
    for key, schedule, rates in schedules(model, prefix):
        warmup = schedule.get("num_warmup_steps")
        if is_count(warmup) and steps <= warmup:
            # The warm-up's rate at step s (from 0) is s / warmup: the last step's is the peak.
            peak = (
                f"peaks at about {percent(100 * (steps - 1) / warmup)}% of {' and '.join(rates)}"
                if steps > 1
                else "is 0 at the warm-up's first step, the run's only one: it trains nothing"
            )
            lines.append(
                f"{key}.num_warmup_steps={warmup} is not shorter than {run_length}: the learning "
                f"rate {peak}; lower the warm-up"
            )
        elif is_wsd(schedule.get("_target_")):
            lines += wsd_misfit(steps, run_length, key, schedule, " and ".join(rates))
    return lines


def wsd_misfit(
    steps: int, run_length: str, key: str, schedule: Mapping[str, Any], rates: str
) -> list[str]:
    """The line for a `get_wsd_schedule` whose phases do not fit the run (its warm-up is
    shorter than the run: `misfits` warned otherwise)."""
    warmup, stable, decay = (schedule.get(name) for name in PHASE_KEYS)
    if not (is_count(warmup) and is_count(decay)) or not (stable is None or is_count(stable)):
        return []  # the config checks refuse what is not a count
    if stable is None:
        if warmup + decay <= steps:
            return []
        return [
            f"{key}.num_warmup_steps={warmup} + num_decay_steps={decay} is more than "
            f"{run_length}: {WSD} gets a stable phase of {steps - warmup - decay} steps, and "
            f"the learning rate never reaches {rates} (the decay is "
            f"{100 * (warmup + decay - steps) / decay:.0f}% done when the warm-up ends); lower "
            f"num_decay_steps to at most {steps - warmup}"
        ]
    total = warmup + stable + decay
    if total == steps:
        return []
    phases = f"num_warmup_steps={warmup} + num_stable_steps={stable} + num_decay_steps={decay}"
    if total > steps:
        what = f"the run ends {total - steps} steps before the decay does (above the floor)"
    else:
        floor = schedule.get("min_lr_ratio", 0)
        what = f"its last {steps - total} steps train at the floor (min_lr_ratio={floor} of lr)"
    return [
        f"{key}.{phases} = {total} steps, not {run_length} ({WSD} then ignores the run's "
        f"length): {what}; drop num_stable_steps (the stable phase then takes the steps the "
        "warm-up and decay leave)"
    ]


def is_wsd(target: Any) -> bool:
    """Whether `target` (a class path, or from Python the function) is transformers'
    `get_wsd_schedule`."""
    called = locate(target)[0] if isinstance(target, str) else target
    return getattr(called, "__name__", None) == WSD and "transformers" in str(
        getattr(called, "__module__", "")
    )


def is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def percent(value: float) -> str:
    """`value` (a percentage) for a warning: whole numbers, two figures below 1 (not "0")."""
    return f"{value:.0f}" if value >= 1 else f"{value:.2g}"
