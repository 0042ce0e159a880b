"""Checks of the `trainer` settings and of the run's length, before any work.

Lightning refuses some of these only when the Trainer is built or fit starts, after the data is
prepared, with advice that may name other keys; some (no step and no epoch limit with a
schedule) were tracebacks.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from lmtrain.utils.checks import Problems
from lmtrain.utils.schedule_fit import is_count, misfits
from lmtrain.utils.strategy_checks import check_strategy

log = logging.getLogger(__name__)

# Lightning's precision settings (its own check comes later, as a traceback).
PRECISIONS = (
    "32-true",
    "bf16-mixed",
    "bf16-true",
    "16-mixed",
    "16-true",
    "64-true",
    "32",
    "16",
    "bf16",
    "64",
)

# Lightning's yes/no Trainer settings: it takes what it is given, and `bool("no")` is True, so
# `trainer.enable_progress_bar=no` drew the bar. `deterministic` also takes "warn".
TRAINER_SWITCHES = (
    "enable_progress_bar",
    "enable_checkpointing",
    "enable_model_summary",
    "inference_mode",
    "use_distributed_sampler",
    "detect_anomaly",
    "barebones",
    "sync_batchnorm",
    "benchmark",
    "deterministic",
)


def check_trainer(trainer: dict[str, Any], problems: Problems) -> None:
    check_validation_trainer(trainer, problems)  # the settings eval shares
    precision = trainer.get("precision", "32-true")
    if str(precision) in ("16-mixed", "16") and runs_on_cpu(trainer):
        # Lightning switches it to bf16-mixed with a warning: another run than the one asked.
        problems.add(
            f"trainer.precision={precision} (fp16 mixed precision) runs on a GPU only; on the "
            "CPU Lightning would train in bf16-mixed instead: pass trainer.precision=bf16-mixed "
            "or 32-true here, or trainer=gpu"
        )
    steps = trainer.get("max_steps", -1)
    if problems.integer("trainer.max_steps", steps, -1) and steps == 0:
        problems.add("trainer.max_steps=0 trains nothing: pass a positive number of steps")
    check_something_trains(trainer, problems)
    check_strategy(trainer, problems)  # before any rank starts
    # Lightning takes a float as a share of an epoch (at most 1.0) and an int as batches; its
    # refusal of 1.5 came after the data was prepared.
    interval = trainer.get("val_check_interval")
    # A time span (DD:HH:MM:SS, {minutes: 30}) is Lightning's to parse.
    if not isinstance(interval, str | dict):
        problems.number("trainer.val_check_interval", interval, low=0, low_open=True, optional=True)
    limit = trainer.get("limit_val_batches")
    shares = (
        ("val_check_interval", interval),
        ("limit_val_batches", limit),
        ("limit_train_batches", trainer.get("limit_train_batches")),
        ("limit_test_batches", trainer.get("limit_test_batches")),
        ("overfit_batches", trainer.get("overfit_batches")),
    )
    for key, value in shares:
        if isinstance(value, float) and value > 1:
            problems.add(
                f"trainer.{key}={value} is a share of an epoch above 1.0: pass a share up to "
                f"1.0, or a whole number of batches (trainer.{key}={int(value)})"
            )
    # A share of an epoch needs epochs to be shares of: Lightning refused it after the data
    # was prepared, in a line that our trainer hint then blamed on the accelerator.
    every_epochs = trainer.get("check_val_every_n_epoch")
    if isinstance(interval, float) and 0 < interval <= 1 and every_epochs is None:
        problems.add(
            f"trainer.val_check_interval={interval} is a share of an epoch, which needs "
            "trainer.check_val_every_n_epoch=1 (null here: validations count batches across "
            f"epochs): pass both, or a whole number of batches (trainer.val_check_interval=N)"
        )
    problems.number("trainer.limit_val_batches", limit, low=0, optional=True)
    problems.integer("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), 0)
    problems.integer(
        "trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1
    )
    problems.number(
        "trainer.gradient_clip_val", trainer.get("gradient_clip_val"), low=0, optional=True
    )
    # Lightning divides by the one (0: ZeroDivisionError) and compares the other (abc: a
    # TypeError), each in a traceback that named no key.
    problems.integer("trainer.check_val_every_n_epoch", every_epochs, 1, optional=True)
    sanity = trainer.get("num_sanity_val_steps")
    problems.integer("trainer.num_sanity_val_steps", sanity, -1, optional=True)


def check_validation_trainer(trainer: dict[str, Any], problems: Problems) -> None:
    """The trainer settings `lmtrain.eval` uses (it only validates): the precision, and the
    kinds of values; the run's length and validation schedule are training's."""
    problems.choice("trainer.precision", str(trainer.get("precision", "32-true")), PRECISIONS)
    check_trainer_kinds(trainer, problems)


def check_trainer_kinds(trainer: dict[str, Any], problems: Problems) -> None:
    """Settings Lightning compares or counts with only once it runs (`min_steps=abc` and
    `limit_test_batches=abc` were TypeErrors deep in its loops, naming no key), and its yes/no
    settings, which it reads as Python truth (`no` is true)."""
    for key in TRAINER_SWITCHES:
        value = trainer.get(key)
        if value is not None and not (key == "deterministic" and value == "warn"):
            problems.boolean(f"trainer.{key}", value)
    for key in ("min_steps", "min_epochs"):
        problems.integer(f"trainer.{key}", trainer.get(key), -1, optional=True)
    for key in ("limit_test_batches", "limit_predict_batches", "overfit_batches"):
        problems.number(f"trainer.{key}", trainer.get(key), low=0, optional=True)
    fast = trainer.get("fast_dev_run", False)
    if not isinstance(fast, bool) and not (isinstance(fast, int) and fast >= 0):
        problems.add(
            f"trainer.fast_dev_run={fast!r} is neither true, false nor a number of batches: "
            "pass trainer.fast_dev_run=true (one batch of each kind), or a whole number"
        )


def check_something_trains(trainer: dict[str, Any], problems: Problems) -> None:
    """`trainer.max_epochs=0` (whatever max_steps says: Lightning stops at either limit) and
    `trainer.limit_train_batches=0` (or 0.0) take no step, yet the run exited 0 with a
    metrics.json that looked like a finished run's. `max_steps=0` is refused in check_trainer."""
    epochs = trainer.get("max_epochs")
    if problems.integer("trainer.max_epochs", epochs, -1, optional=True) and epochs == 0:
        problems.add(
            "trainer.max_epochs=0 trains nothing: pass a positive number of epochs, or "
            "trainer.max_epochs=-1 (no epoch limit) for trainer.max_steps to end the run"
        )
    batches = trainer.get("limit_train_batches")
    if problems.number("trainer.limit_train_batches", batches, low=0, optional=True) and (
        batches == 0
    ):
        problems.add(
            f"trainer.limit_train_batches={batches} trains nothing: pass a positive number of "
            "batches, a share of an epoch up to 1.0, or leave the key out (drop your "
            "+trainer.limit_train_batches=... override) to train on every batch"
        )


def check_run_length(trainer: dict[str, Any], model: dict[str, Any], problems: Problems) -> None:
    """`trainer.max_steps=-1` (no step limit) with `max_epochs=-1` (no epoch limit) has no end,
    and a learning-rate schedule spans the run's steps: it was an OverflowError (infinity) after
    data preparation and the model's build. With an epoch limit the schedule spans those."""
    steps, epochs = trainer.get("max_steps", -1), trainer.get("max_epochs")
    unbounded = isinstance(steps, int) and steps == -1 and isinstance(epochs, int) and epochs == -1
    if unbounded and model.get("scheduler") is not None:
        problems.add(
            "trainer.max_steps=-1 with trainer.max_epochs=-1 sets no end for the learning-rate "
            "schedule (model.scheduler) to span: pass trainer.max_steps=<steps>, or "
            "trainer.max_epochs=<epochs>"
        )


def check_cpu_attention(trainer: dict[str, Any], model: dict[str, Any], problems: Problems) -> None:
    """flex_attention has no backward on the CPU: `CausalLMModule.setup` refuses it (for a plain
    Trainer), but only after the corpus was tokenized and the model built; this refuses a
    command's run before any work, in the same words. Not where the model class has no
    flex_attention path at all (that refusal, already found, advises better)."""
    named = any(m.startswith("model.attn_implementation=") for m in problems.found)
    if model.get("attn_implementation") == "flex_attention" and runs_on_cpu(trainer) and not named:
        problems.add(
            "model.attn_implementation='flex_attention' cannot train on the CPU (PyTorch's "
            "FlexAttention has no backward there): pass model.attn_implementation=sdpa, or "
            "train on a GPU"
        )


def check_fp16_optimizer_eps(
    trainer: dict[str, Any], model: dict[str, Any], problems: Problems
) -> None:
    """`trainer.precision=16-true` keeps the weights and the optimizer's state in float16, where
    AdamW's eps=1e-8 is 0: the run went NaN within 20 steps, and the NaN guard advised a lower
    learning rate. Any accelerator; `16` is Lightning's alias of 16-mixed (float32 state).
    Refused only where eps rounds to 0 (below about 3e-8): float16's subnormal values above it
    (5e-8 to 3e-5) trained 120 steps of gpt2_tiny, the smallest slower and to a higher loss.
    An optimizer with no `eps` key (SGD, Muon's part) is not refused."""
    if str(trainer.get("precision")) != "16-true":
        return
    optimizer = model.get("optimizer")
    if not isinstance(optimizer, dict):
        return
    parts = [
        (f"model.optimizer.{name}.optimizer", part["optimizer"])
        for name, part in optimizer.items()
        if isinstance(part, dict) and isinstance(part.get("optimizer"), dict)
    ]  # model/optimizer=muon's parts, each with its optimizer; else one optimizer
    for key, node in parts or [("model.optimizer", optimizer)]:
        eps = node.get("eps")
        number = isinstance(eps, int | float) and not isinstance(eps, bool) and eps > 0
        if number and torch.tensor(eps, dtype=torch.float16).item() == 0:
            problems.add(
                f"trainer.precision=16-true keeps the optimizer's state in float16, where "
                f"{key}.eps={eps!r} is 0 (NaN within steps): pass trainer.precision=bf16-true, "
                f"bf16-mixed or 32-true, or {key}.eps=1e-4"
            )


def warn_long_warmup(trainer: dict[str, Any], model: dict[str, Any]) -> None:
    """Warn when a schedule's warm-up is not shorter than the run: the learning rate never
    reaches the configured one (nor does a WSD schedule's whose warm-up and decay are longer).
    It happens to whoever copies gpt2_124m (2,000 warm-up steps) into a short experiment. Not
    refused: debug runs (`debug=fdr`, a few steps) are meant short.
    `model/optimizer=muon`'s parts are checked each with its own schedule. An epoch-bound run's
    length is known only once its data are (`CausalLMModule.configure_optimizers` checks it)."""
    steps = trainer.get("max_steps")
    if not is_count(steps) or steps <= 0 or trainer.get("fast_dev_run"):
        return
    warn_warmup_not_shorter_than(steps, f"trainer.max_steps={steps}", model)


def warn_warmup_not_shorter_than(
    steps: int, run_length: str, model: dict[str, Any], prefix: str = "model."
) -> None:
    """The warnings of `warn_long_warmup` for a run of `steps` optimizer steps (`run_length`
    says where that number comes from): a warm-up not shorter than the run, and a WSD schedule
    whose phases do not fit it (`lmtrain.utils.schedule_fit`). `prefix`: "" from Python, where
    the schedules are the module's `scheduler=` and `optimizer=` partials."""
    for line in misfits(steps, run_length, model, prefix):
        log.warning("%s", line)


def runs_on_cpu(trainer: dict[str, Any]) -> bool:
    """Whether the trainer would run on the CPU: asked for, or `auto` without a GPU."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        return not (torch.cuda.is_available() or torch.backends.mps.is_available())
    return accelerator == "cpu"
