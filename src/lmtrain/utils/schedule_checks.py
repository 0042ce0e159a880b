"""Checks of a learning-rate schedule's values (`model.scheduler`, or a part's own), read against
the parameters of the schedule they build.

transformers reads them only when the optimizer is built, after the data is prepared: a null
warm-up failed there with "'<' not supported between instances of 'int' and 'NoneType'", a cosine
with neither floor with "One of min_lr or min_lr_rate should be set", and `min_lr_rate=-2` drove
the learning rate to 0 for half a run.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from lmtrain.utils.checks import Problems, call_parameters
from lmtrain.utils.config_keys import locate

# What to pass for a schedule key that was null where the schedule needs a value.
SCHEDULE_VALUES = {
    "num_warmup_steps": "a whole number of at least 0 (the optimizer steps of warm-up, e.g. 50)",
    "min_lr_rate": "a number in [0, 1] (the floor of the cosine, as a share of lr, e.g. 0.1)",
}


def check_scheduler(
    key: str, schedule: Mapping[str, Any], given: Mapping[str, Any], problems: Problems
) -> None:
    """The keys `given` under `key`, in the `schedule` they build (a part's over model.scheduler's):
    warm-up steps, the floor of a cosine (`min_lr_rate`, a share of lr, or `min_lr`), and no null
    where the schedule needs a value (transformers read them after the data is prepared: "'<' not
    supported between 'int' and 'NoneType'"). A parameter of `int | None` takes null."""
    target = schedule.get("_target_")
    called = locate(target)[0] if isinstance(target, str) else None
    takes = {p.name: takes_none(p) for p in call_parameters(called)[0]} if called else {}
    func = getattr(called, "__name__", target)
    for name, value in given.items():
        if value is None and takes.get(name) is False:
            wanted = SCHEDULE_VALUES.get(name, "a value (or drop the key for its default)")
            problems.add(f"{key}.{name}=null: {func} needs a value there: pass {wanted}")
        elif name == "num_warmup_steps":
            problems.integer(f"{key}.{name}", value, 0, optional=True)
        elif name in ("min_lr_rate", "min_lr"):
            problems.number(
                f"{key}.{name}", value, 0, 1 if name == "min_lr_rate" else None, optional=True
            )
    floors = ("min_lr_rate", "min_lr")  # transformers' min-lr cosine takes exactly one of them
    if not set(floors) <= set(takes) or not ("_target_" in given or set(floors) & set(given)):
        return
    floors_set = [name for name in floors if schedule.get(name) is not None]
    if len(floors_set) != 1:
        values = ", ".join(
            f"{k}={'null' if schedule.get(k) is None else schedule[k]}" for k in floors
        )
        # A floor the part's own keys did not set comes from model.scheduler: a part drops it
        # by setting it null over it (`~` deletes only a key the part itself has).
        drop = f"~{key}.min_lr" if "min_lr" in given else f"+{key}.min_lr=null"
        advice = (
            f"drop one ({drop})"
            if floors_set
            else f"pass {key}.min_lr_rate=0.1 (a share of lr), or a min_lr (a learning rate)"
        )
        floor = "the floor its cosine decays to"
        problems.add(f"{key} has {values}: {func} takes exactly one of them, {floor}: {advice}")


def takes_none(parameter: inspect.Parameter) -> bool:
    """Whether a schedule's parameter takes None: a None default, or None in its annotation."""
    annotation = parameter.annotation
    text = annotation if isinstance(annotation, str) else repr(annotation)
    typed = annotation is not parameter.empty and any(w in text for w in ("None", "Optional"))
    return parameter.default is None or typed
