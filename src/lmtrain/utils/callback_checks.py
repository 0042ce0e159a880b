"""The settings callbacks and loggers read only once training runs, and the run's `tags`,
checked before work starts.

A bad one was found late, or never: `callbacks.throughput.available_flops=abc` a traceback after
data preparation, `callbacks.text_samples.cpu_threads=abc` a warning at every validation and no
samples, `available_flops=-1` a negative MFU, `tags=mytag` a W&B run tagged m, y, t, a, g. The
callbacks are found by their `_target_`, so a renamed entry is checked too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from lmtrain.errors import epoch_end_ranking
from lmtrain.utils.checks import Problems
from lmtrain.utils.filename_fields import FIELD
from lmtrain.utils.logger_checks import csv_version_problem, mlflow_entry_problem

log = logging.getLogger(__name__)

CHECKPOINT = "lmtrain.callbacks.checkpoint.StepScheduledCheckpoint"
THROUGHPUT = "lmtrain.callbacks.throughput.TokenThroughputMonitor"
TEXT_SAMPLES = "lmtrain.callbacks.samples.TextSamples"
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"
RICH_PROGRESS_BAR = "lmtrain.lightning_compat.StepsRichProgressBar"
# A `{metric:format}` field of a checkpoint file name (its metric may hold a `/`: val/loss).
NAME_FIELD = re.compile(r"\{[^{}]*\}")
CSV_LOGGERS = (
    "lmtrain.utils.csv_history.ResumableCSVLogger",
    "lightning.pytorch.loggers.CSVLogger",
)
MLFLOW_LOGGERS = (
    "lmtrain.utils.logger_runs.MLFlowLogger",
    "lightning.pytorch.loggers.MLFlowLogger",
)
# The modes wandb.init takes (wandb.sdk.wandb_settings: `mode`).
WANDB_MODES = ("online", "offline", "disabled", "shared", "dryrun", "run")
# Yes/no settings of the checkpoint callback and of EarlyStopping, which Lightning reads as
# Python truth (`save_weights_only=no` saved weights only).
CHECKPOINT_SWITCHES = (
    "save_weights_only",
    "auto_insert_metric_name",
    "enable_version_counter",
    "save_on_exception",
    "save_on_train_epoch_end",
    "verbose",
)
EARLY_STOPPING_SWITCHES = (
    "check_finite",
    "strict",
    "verbose",
    "log_rank_zero_only",
    "check_on_train_epoch_end",
)
# W&B refuses a tag that is empty or longer than this (wandb_settings.validate_run_tags).
TAG_MAX_CHARS = 64
# WandbLogger settings W&B takes only as text (wandb.Settings run_name, run_group, ...).
WANDB_TEXTS = ("name", "group", "job_type", "notes")


def check_callbacks(callbacks: Mapping[str, Any], problems: Problems) -> None:
    """`callbacks.<name>.*` of the checkpoint, throughput and text-samples callbacks."""
    for name, entry in callbacks.items():
        if not isinstance(entry, Mapping):
            continue
        key, target = f"callbacks.{name}", entry.get("_target_")
        if target == CHECKPOINT:
            check_checkpoint_schedule(key, entry, problems)
        elif target == EARLY_STOPPING:
            check_early_stopping(key, entry, problems)
        elif target == THROUGHPUT:
            flops = entry.get("available_flops")
            problems.number(f"{key}.available_flops", flops, low=0, low_open=True, optional=True)
            # Lightning's Throughput needs two logged steps to measure a rate.
            problems.integer(f"{key}.window_size", entry.get("window_size", 4), minimum=2)
        elif target == TEXT_SAMPLES:
            threads = entry.get("cpu_threads", 1)
            problems.integer(f"{key}.cpu_threads", threads, minimum=1, optional=True)
            check_file_name(f"{key}.filename", entry.get("filename"), f"{key}.dirpath", problems)
        elif target == RICH_PROGRESS_BAR:  # compared with the batch index at the first batch
            problems.integer(f"{key}.refresh_rate", entry.get("refresh_rate", 1), minimum=0)


def check_file_name(key: str, name: Any, folder_key: str, problems: Problems) -> None:
    """A file name, not a path: `../../<another run>/checkpoints/best` wrote over another run's
    checkpoint, outside every check of the folder (`folder_key`) it is written in."""
    if name is None:
        return
    plain = NAME_FIELD.sub("", str(name))  # the metric fields may hold a '/'
    if "/" in plain:
        problems.add(
            f"{key}={name!r} holds a path (a '/'): pass a file name; its folder is {folder_key}"
        )


def check_checkpoint_schedule(key: str, entry: Mapping[str, Any], problems: Problems) -> None:
    """Whole numbers (2.5 ran, saving every 5 steps), and a step schedule that writes something:
    `every_n_train_steps` writes last.ckpt only, so with `save_last=false` it saved nothing."""
    every = entry.get("every_n_train_steps")
    problems.integer(f"{key}.every_n_train_steps", every, minimum=0, optional=True)
    dirpath = entry.get("dirpath")
    if "dirpath" in entry and (dirpath is None or not str(dirpath).strip()):
        # Lightning then saves into the working directory (''), or under a logger's folder
        # (null), where neither resume nor the other-run checks look.
        problems.add(
            f"{key}.dirpath={dirpath!r} names no folder: leave it as configured (the run "
            "folder's checkpoints/), or pass a folder"
        )
    problems.integer(f"{key}.save_top_k", entry.get("save_top_k", 1), minimum=-1)
    filename = entry.get("filename")
    check_file_name(f"{key}.filename", filename, f"{key}.dirpath", problems)
    if filename == "last" and entry.get("save_last") not in (None, False):  # writes last.ckpt
        problems.add(
            f"{key}.filename='last' is the name of last.ckpt, and the best checkpoint and the "
            "last one would overwrite each other: pick another name (by default "
            "best-step={step}-val_loss={val/loss:.4f})"
        )
    check_kept_names(key, entry, problems)
    check_inserted_names(key, entry, problems)
    problems.integer(f"{key}.every_n_epochs", entry.get("every_n_epochs"), 0, optional=True)
    problems.choice(f"{key}.mode", entry.get("mode", "min"), ("min", "max"))
    save_last = entry.get("save_last")
    if save_last not in (None, "link"):  # Lightning's "link": last.ckpt a link to the latest
        problems.boolean(f"{key}.save_last", save_last)
    for switch in CHECKPOINT_SWITCHES:
        if entry.get(switch) is not None:
            problems.boolean(f"{key}.{switch}", entry[switch])
    if entry.get("save_on_train_epoch_end") is True:  # refused as the callback is built: later
        problems.add(str(epoch_end_ranking(key)))
    interval = entry.get("train_time_interval")
    if interval is not None and not (isinstance(interval, Mapping) and "_target_" in interval):
        # Lightning calls its total_seconds() at the first batch (an AttributeError). `++`: the
        # shipped config has no such key (Hydra refuses it without `+`), a user's may have one.
        problems.add(
            f"{key}.train_time_interval={interval!r} is not a time span: pass one as "
            f"'++{key}.train_time_interval={{_target_:datetime.timedelta,minutes:30}}', or null"
        )
    if isinstance(every, int) and every > 0 and entry.get("save_last") is False:
        problems.add(
            f"{key}.every_n_train_steps={every} writes last.ckpt, which {key}.save_last=false "
            "turns off, so nothing would be saved on that schedule: pass save_last=true, or "
            "drop every_n_train_steps"
        )


def check_kept_names(key: str, entry: Mapping[str, Any], problems: Problems) -> None:
    """A `filename` that can give two kept checkpoints one name, with `save_top_k` above 1 (or
    -1, all) and no version counter (`enable_version_counter: false`, which last.ckpt needs):
    each save replaced the one of the same name, so `filename=best save_top_k=2` kept one file,
    the latest save, not the best. Only Lightning's `{step}` differs between two saves: a
    step-counted run validates many times an epoch, and two validations may log the same
    metric. Lightning's default name (no `filename`) holds it."""
    top_k, filename = entry.get("save_top_k", 1), entry.get("filename")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k in (0, 1):
        return
    if entry.get("enable_version_counter", True) is not False:
        return  # Lightning appends -v1, -v2 to a taken name
    if not isinstance(filename, str) or not filename or "step" in FIELD.findall(filename):
        return  # Lightning's default name is {epoch}-{step}
    kept = "every save" if top_k == -1 else f"the best {top_k}"
    problems.add(
        f"{key}.filename={filename!r} gives every kept checkpoint one name, so save_top_k="
        f"{top_k} keeps one file, the latest save, not {kept}: add {{step}} to it, as in "
        f"\"{key}.filename='{filename}-{{step}}'\""
    )


def check_inserted_names(key: str, entry: Mapping[str, Any], problems: Problems) -> None:
    """A `filename` field naming a metric with a '/' (val/loss) while `auto_insert_metric_name`
    is on (Lightning's default): Lightning writes `name=` before each value, so
    `{epoch}-{step}-{val/loss:.3f}` saved `epoch=1-step=28-val/loss=3.839.ckpt`, a file in a
    subfolder. Resume (`resume=<run>`, `ckpt_path=last`) looks for checkpoints in the folder
    itself and said there were none, and each replaced best left an empty folder behind.
    Refused rather than searched for: Lightning's own docs say to turn the insertion off for
    such names, and every reader of the checkpoint folder (resume, eval, export, the other-run
    checks) would otherwise have to walk subfolders."""
    filename = entry.get("filename")
    if entry.get("auto_insert_metric_name", True) is not True or not isinstance(filename, str):
        return
    slashed = [field for field in dict.fromkeys(FIELD.findall(filename)) if "/" in field]
    if slashed:
        problems.add(
            f"{key}.filename={filename!r} with {key}.auto_insert_metric_name=true writes "
            f"'{slashed[0]}=' into the name, and its '/' makes a subfolder that resume does not "
            f"search: pass {key}.auto_insert_metric_name=false and name the value yourself "
            "(best-step={step}-val_loss={val/loss:.4f}), or a field without '/'"
        )


def check_early_stopping(key: str, entry: Mapping[str, Any], problems: Problems) -> None:
    """Lightning's EarlyStopping compares these only at the first validation (`patience=abc` a
    TypeError there, after minutes of training), and reads its yes/no settings as truth."""
    problems.integer(f"{key}.patience", entry.get("patience", 3), 0)
    problems.number(f"{key}.min_delta", entry.get("min_delta", 0.0))
    for threshold in ("stopping_threshold", "divergence_threshold"):
        problems.number(f"{key}.{threshold}", entry.get(threshold), optional=True)
    problems.choice(f"{key}.mode", entry.get("mode", "min"), ("min", "max"))
    for switch in EARLY_STOPPING_SWITCHES:
        if entry.get(switch) is not None:
            problems.boolean(f"{key}.{switch}", entry[switch])
    if entry.get("check_on_train_epoch_end") is True:
        problems.add(epoch_end_stop_refusal(key))


def epoch_end_stop_refusal(key: str) -> str:
    """Why an EarlyStopping (`key`) may not decide at the training epoch's end: lmtrain writes
    last.ckpt right after each validation, so the decision came after that validation's save,
    and a run preempted or killed in between resumed past it and trained on."""
    return (
        f"{key}.check_on_train_epoch_end=true decides the stop at the epoch's end, after "
        "last.ckpt is written for the validation before it, so a run stopped in between resumes "
        "past the decision and trains on: drop the key (the stop is decided after each validation)"
    )


def no_validation_in_training(trainer: Mapping) -> str | None:
    """Why no validation runs during training, or None: `limit_val_batches=0`, or a whole
    `val_check_interval` (counted in batches, with `check_val_every_n_epoch=null`) longer than
    the run's `max_steps` optimizer steps of `accumulate_grad_batches` batches each."""
    limit = trainer.get("limit_val_batches")
    if not isinstance(limit, bool) and isinstance(limit, int | float) and limit == 0:
        return "trainer.limit_val_batches=0 runs no validation during training"
    interval, steps = trainer.get("val_check_interval"), trainer.get("max_steps")
    accumulate = trainer.get("accumulate_grad_batches") or 1
    numbers = (interval, steps, accumulate)
    if trainer.get("check_val_every_n_epoch") is not None or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in numbers
    ):
        return None
    if steps > 0 and interval > steps * accumulate:
        return (
            f"trainer.val_check_interval={interval} batches is longer than the run "
            f"(trainer.max_steps={steps} x accumulate_grad_batches={accumulate})"
        )
    return None


def warn_unvalidated_early_stopping(callbacks: Mapping[str, Any], trainer: Mapping) -> None:
    """Warn when an EarlyStopping that watches a validation metric cannot act because no
    validation runs in training (`no_validation_in_training`): the run went its whole length
    without a word. Not refused: a speed run may turn validation off on purpose."""
    reason = no_validation_in_training(trainer)
    if reason is None:
        return
    for name, entry in callbacks.items():
        if not isinstance(entry, Mapping) or entry.get("_target_") != EARLY_STOPPING:
            continue
        monitor = entry.get("monitor")
        if str(monitor).startswith("val/"):
            log.warning(
                "callbacks.%s (monitor=%s) never stops this run: %s; validate some batches "
                "sooner, or drop it with callbacks.%s=null",
                name,
                monitor,
                reason,
                name,
            )


def check_logger(name: str, entry: Mapping[str, Any], problems: Problems, wandb: bool) -> None:
    """`logger.<name>.*` settings its logger reads only once it runs: the CSV writer divides by
    `flush_logs_every_n_steps` (0: ZeroDivisionError at the first row), W&B refused an unknown
    mode in a traceback and read `offline=no` as offline; MLflow iterated over a string of tags,
    and refused a list as a tag. `wandb`: the entry is a W&B logger's (`is_wandb_entry`)."""
    key, target = f"logger.{name}", entry.get("_target_")
    if target in CSV_LOGGERS:
        flush = entry.get("flush_logs_every_n_steps", 100)
        problems.integer(f"{key}.flush_logs_every_n_steps", flush, 1)
        if problem := csv_version_problem(key, entry):  # null: a resume's second metrics.csv
            problems.add(problem)
    if wandb:
        problems.boolean(f"{key}.offline", entry.get("offline", False))
        if entry.get("mode") is not None:
            problems.choice(f"{key}.mode", entry["mode"], WANDB_MODES)
        for field in WANDB_TEXTS:
            check_wandb_text(f"{key}.{field}", entry.get(field), problems)
    if target in MLFLOW_LOGGERS and (problem := mlflow_entry_problem(key, entry)):
        problems.add(problem)


def check_wandb_text(key: str, value: Any, problems: Problems) -> None:
    """A W&B run's name, group, job type or notes is text: W&B refused a number
    (`logger.wandb.group=2024`, or `${model.optimizer.lr}` in a sweep) with a pydantic
    traceback when the run started."""
    if value is not None and not isinstance(value, str):
        problems.add(
            f"{key}={value!r} is not text, which W&B needs: quote it, '{key}=\"{value}\"' "
            f"(a ${{...}} of a number: put text around it, '{key}=lr${{model.optimizer.lr}}')"
        )


def check_tags(tags: Any, problems: Problems, wandb: bool, key: str = "tags") -> None:
    """A list: W&B and the MLflow logger iterate over the value (a string became one tag per
    letter). With the W&B logger, a list of short texts: W&B refuses a number (a TypeError),
    and empty or long tags, only when the run starts. `key`: the setting, for the message
    (`tags`, or a W&B logger's own `logger.<name>.tags`)."""
    if tags is None:
        return
    if not isinstance(tags, list):
        problems.add(f"{key}={tags!r} is not a list: pass '{key}=[\"{tags}\"]' (or {key}=[a,b])")
        return
    for i, tag in enumerate(tags if wandb else ()):
        if isinstance(tag, list | dict):  # `tags=[a,[b]]`: quoting it gave no line to paste
            problems.add(
                f"{key}[{i}]={tag!r} is not text, which W&B needs: pass a flat list of texts, "
                f"{key}=[a,b]"
            )
        elif not isinstance(tag, str):
            problems.add(
                f"{key}[{i}]={tag!r} is not text, which W&B needs: quote it, "
                f"'{key}=[\"{tag}\"]' (a ${{...}} of a number: put text around it, "
                f"'{key}=[\"seed${{seed}}\"]')"
            )
        elif not 1 <= len(tag) <= TAG_MAX_CHARS:
            problems.add(
                f"{key}[{i}]={tag!r} has {len(tag)} characters: W&B takes 1 to {TAG_MAX_CHARS}"
            )
