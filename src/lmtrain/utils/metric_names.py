"""Metric names in a config that no code logs, or not when they are read: a callback's
`monitor` or `optimized_metric` that spells one of lmtrain's another way (`val_loss`),
misspells it (`val/los`), names nothing lmtrain logs (`loss`), or names a training metric
(`train/loss`) that a checkpoint or EarlyStopping reads at a step lmtrain logs nothing.

Lightning stopped such a run at its first validation (ModelCheckpoint: at its first save),
after all the steps before it, with no checkpoint written; a sweep stopped after its first job.
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
# What lmtrain logs at training steps, only every trainer.log_every_n_steps (module.py).
STEP_PREFIX = "train/"
# Callbacks of these packages log no val metric of their own, nor do lmtrain's shipped ones
# (configs/callbacks/default.yaml): any other is the user's, which may, also one added under
# lmtrain/callbacks/ as the README says.
KNOWN_PACKAGES = ("lightning.", "pytorch_lightning.")
SHIPPED_CALLBACKS = frozenset(
    f"lmtrain.{name}"
    for name in (
        "callbacks.checkpoint.StepScheduledCheckpoint",
        "callbacks.lr_monitor.StepLearningRateMonitor",
        "lightning_compat.StepsRichProgressBar",
        "callbacks.throughput.TokenThroughputMonitor",
        "callbacks.samples.TextSamples",
        "callbacks.preemption.PreemptionCheckpoint",
        "callbacks.wandb_artifact.WandbModelArtifact",
    )
)
LIGHTNING_LOG_EVERY = 50  # Lightning's default trainer.log_every_n_steps
# lmtrain's checkpoint ranks at validations only, whatever its every_n_train_steps.
LMTRAIN_CHECKPOINT = "lmtrain.callbacks.checkpoint.StepScheduledCheckpoint"


def check_metric_names(
    callbacks: Mapping[str, Any],
    optimized_metric: Any,
    problems: Problems,
    ours: bool = False,
    trainer: Mapping[str, Any] | None = None,
) -> None:
    """`monitor` of each callback config in `callbacks` (the resolved group), and
    `optimized_metric`, that spell a metric of ours another way (`val_loss`): refused. With
    `ours` (the model is lmtrain's own module, which logs nothing else), a monitor that stops
    the run when missing (a ModelCheckpoint that ranks, a strict EarlyStopping: `fails_without`)
    is refused too when it names no metric lmtrain logs at validation, or a `train/` metric
    read at a step the loggers skip (`unlogged_reads`, from `trainer`, the resolved group;
    None: no read is known to fall on a logged step, so every such monitor is refused); an
    `optimized_metric` close to one of ours is a typo, refused (a sweep stopped at it only
    after its first job had trained). A callback of the user's own (`own_callbacks`) may log
    any name (`val/bpc`, one letter from val/bpb): with one, a monitor is only refused as
    another spelling, and warned about when close to one of ours."""
    named = {
        f"callbacks.{name}.monitor": node.get("monitor")
        for name, node in callbacks.items()
        if isinstance(node, Mapping)
    }
    named["optimized_metric"] = optimized_metric
    own = own_callbacks(callbacks)
    for key, value in named.items():
        if not isinstance(value, str) or value in VAL_METRICS:
            continue
        # Another spelling of one of ours (`val_loss`, `val-loss`, `VAL/LOSS`).
        same = [m for m in VAL_METRICS if letters(m) == letters(value)]
        if same:
            problems.add(f"{key}={value!r} is not a metric lmtrain logs: did you mean {same[0]}?")
            continue
        close = difflib.get_close_matches(value, VAL_METRICS, n=1, cutoff=0.8)
        sweep = key == "optimized_metric"
        reader = None if sweep else fails_without(callbacks, key)
        if ours and close and (sweep or (reader and not own)):  # a typo (`val/los`)
            why = f" ({reader} stops the run at its first validation when its metric is missing)"
            problems.add(
                f"{key}={value!r} is not a metric lmtrain logs: did you mean {close[0]}?"
                + (why if reader else "")
            )
        elif ours and reader and not own and value.startswith(STEP_PREFIX):
            reason = unlogged_reads(callbacks, key, trainer)
            if reason:
                problems.add(f"{key}={value!r} {reason}")
        elif ours and reader and not own:
            problems.add(
                f"{key}={value!r} is not a metric lmtrain logs at validation, and {reader} stops "
                f"the run at its first validation without it: monitor {', '.join(VAL_METRICS)} "
                "(a callback of your own that logs it lets the name through)"
            )
        elif close:
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


def own_callbacks(callbacks: Mapping[str, Any]) -> list[str]:
    """The callback entries whose class is neither one lmtrain ships nor Lightning's: the
    user's own, which may log metrics no check can know, so their names are let through."""
    return [
        name
        for name, node in callbacks.items()
        if isinstance(node, Mapping)
        and not str(node.get("_target_", "")).startswith(KNOWN_PACKAGES)
        and str(node.get("_target_", "")) not in SHIPPED_CALLBACKS
    ]


def fails_without(callbacks: Mapping[str, Any], key: str) -> str | None:
    """The kind of callback whose `monitor` is `key` (callbacks.<name>.monitor) when it stops
    the run if the metric is missing where it reads it: a ModelCheckpoint that ranks top-k
    (`save_top_k` not 0; Lightning raises at its first save), or an EarlyStopping with `strict`
    (Lightning's default; with strict=false it only warns and goes on). None otherwise."""
    node = callbacks.get(key.removeprefix("callbacks.").removesuffix(".monitor"))
    if not isinstance(node, Mapping):
        return None
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    found, _ = locate(str(node.get("_target_", "")))
    if not isinstance(found, type):
        return None
    if issubclass(found, EarlyStopping) and node.get("strict", True) is not False:
        return "EarlyStopping"
    if issubclass(found, ModelCheckpoint) and node.get("save_top_k", 1) != 0:
        return "ModelCheckpoint"
    return None


def unlogged_reads(
    callbacks: Mapping[str, Any], key: str, trainer: Mapping[str, Any] | None
) -> str:
    """Why the `train/` metric `key` monitors is missing (or stale) where its callback reads it,
    or '' when every read falls on a step the loggers write (module.logs_this_step), the only
    steps lmtrain logs it. Read at validations (lmtrain's checkpoint, EarlyStopping): exact when
    validations come every whole trainer.val_check_interval batches (check_val_every_n_epoch
    null), a multiple of log_every_n_steps optimizer steps. Read at a Lightning ModelCheckpoint's
    every_n_train_steps saves: exact at a multiple of log_every_n_steps. Anywhere else the
    name was missing (Lightning stopped the run at its first validation) or one step's loss
    from long before ranked the checkpoint."""
    name = key.removesuffix(".monitor")
    node = callbacks[name.removeprefix("callbacks.")]
    advice = "monitor a val/ metric (val/loss)"
    if trainer is None:  # the schedule is unknown: no read can be shown to be on a logged step
        return (
            f"is logged only every trainer.log_every_n_steps steps, and {name} reads it at "
            f"validations or saves, where it is missing (the run stops there) or stale: {advice}"
        )
    every = whole(trainer.get("log_every_n_steps", LIGHTNING_LOG_EVERY))
    accumulate = whole(trainer.get("accumulate_grad_batches") or 1) or 1
    if not every:
        return f"is logged at no step (trainer.log_every_n_steps={every}): {advice}"
    steps, timed = whole(node.get("every_n_train_steps")), node.get("train_time_interval")
    lightnings = node.get("_target_") != LMTRAIN_CHECKPOINT  # saves at steps, when scheduled
    if (
        lightnings
        and (steps or timed is not None)
        and fails_without(callbacks, key) == "ModelCheckpoint"
    ):
        if timed is None and steps and steps % every == 0:
            return ""
        return (
            f"is logged only every trainer.log_every_n_steps={every} steps, and {name} "
            f"saves at other steps, where it is missing or stale: {advice}, or set "
            f"{name}.every_n_train_steps to a multiple of {every}"
        )
    interval = whole(trainer.get("val_check_interval"))
    by_batches = "check_val_every_n_epoch" in trainer and trainer["check_val_every_n_epoch"] is None
    if by_batches and interval and interval % (every * accumulate) == 0:
        return ""
    return (
        f"is logged only every trainer.log_every_n_steps={every} steps, and {name} reads it at "
        f"each validation, where it is missing (the run stops there) or stale: {advice}, or "
        f"validate on logged steps only (trainer.val_check_interval a multiple of "
        f"{every * accumulate} batches, with trainer.check_val_every_n_epoch=null)"
    )


def whole(value: Any) -> int | None:
    """`value` if it is a whole number (not a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def letters(name: str) -> str:
    """`name` without case and separators: `val_loss` and `val/loss` are the same."""
    return re.sub(r"[^a-z0-9]", "", name.lower())
