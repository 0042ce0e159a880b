"""Metric names in a config that no code logs: a callback's `monitor` or `optimized_metric`
that spells one of lmtrain's another way (`val_loss`), or misspells it (`val/los`).

Lightning stopped such a run at its first validation, after all the steps before it, with no
checkpoint written (a strict EarlyStopping: a traceback); a sweep stopped after its first job.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from typing import Any

from lmtrain.utils.checks import Problems
from lmtrain.utils.config_keys import locate

log = logging.getLogger(__name__)

# What CausalLMModule logs at each validation, the names a `monitor` usually means.
VAL_METRICS = ("val/loss", "val/ppl", "val/bpb")


def check_metric_names(
    callbacks: Mapping[str, Any], optimized_metric: Any, problems: Problems, ours: bool = False
) -> None:
    """`monitor` of each callback config in `callbacks` (the resolved group), and
    `optimized_metric`, that spell a metric of ours another way (`val_loss`). Other names pass:
    a module of one's own may log more. `ours`: the model is lmtrain's own module, which logs
    no other val metric, so an `optimized_metric` close to one of them is a typo, refused (a
    sweep stopped at it only after its first job had trained)."""
    named = {
        f"callbacks.{name}.monitor": node.get("monitor")
        for name, node in callbacks.items()
        if isinstance(node, Mapping)
    }
    named["optimized_metric"] = optimized_metric
    for key, value in named.items():
        if not isinstance(value, str) or value in VAL_METRICS:
            continue
        # Only another spelling of one of ours (`val_loss`, `val-loss`, `VAL/LOSS`): a close
        # but different name (`val/bpc`) may be a metric of one's own.
        same = [m for m in VAL_METRICS if letters(m) == letters(value)]
        if same:
            problems.add(f"{key}={value!r} is not a metric lmtrain logs: did you mean {same[0]}?")
        elif close := difflib.get_close_matches(value, VAL_METRICS, n=1, cutoff=0.8):
            # A typo (`val/los`) failed only at the first validation, after all the steps before it.
            sweep = key == "optimized_metric"
            if sweep and ours:
                problems.add(
                    f"{key}={value!r} is not a metric lmtrain logs: did you mean {close[0]}?"
                )
                continue
            if ours and strict_early_stopping(callbacks, key):  # would stop the run, traced
                problems.add(
                    f"{key}={value!r} is not a metric lmtrain logs: did you mean {close[0]}? "
                    "(EarlyStopping stops the run at its first validation when its metric is "
                    "missing)"
                )
                continue
            log.warning(
                "%s=%r is not a metric lmtrain logs: did you mean %s? If no module of yours logs "
                "it, %s",
                key,
                value,
                close[0],
                "a sweep stops after its first job"
                if sweep
                else "Lightning stops the run at its first validation",
            )


def strict_early_stopping(callbacks: Mapping[str, Any], key: str) -> bool:
    """`key` (callbacks.<name>.monitor) is an EarlyStopping's with `strict` (Lightning's
    default): it raises at the first validation when the metric is missing, a traceback after
    the steps before it; with strict=false it only warns and goes on."""
    name = key.removeprefix("callbacks.").removesuffix(".monitor")
    node = callbacks.get(name) if key.startswith("callbacks.") else None
    if not isinstance(node, Mapping) or node.get("strict", True) is False:
        return False
    from lightning.pytorch.callbacks import EarlyStopping

    found, _ = locate(str(node.get("_target_", "")))
    return isinstance(found, type) and issubclass(found, EarlyStopping)


def letters(name: str) -> str:
    """`name` without case and separators: `val_loss` and `val/loss` are the same."""
    return re.sub(r"[^a-z0-9]", "", name.lower())
