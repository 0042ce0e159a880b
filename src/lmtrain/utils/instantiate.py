"""Instantiate the callbacks and loggers named in a config group, and say which config entry a
failed instantiation was.

Both groups are dicts of `name: {_target_: ...}` so that an experiment can override or drop one
entry (`callbacks.rich_progress_bar=null`) without restating the others.
"""

from __future__ import annotations

import logging
import pydoc
import re
from collections.abc import Callable
from inspect import signature
from pathlib import Path
from typing import Any

import hydra
from huggingface_hub.errors import StrictDataclassError
from hydra.errors import InstantiationException
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, find_cause, first_line
from lmtrain.lightning_compat.loggers import drop_unset_anonymous
from lmtrain.utils.callback_checks import epoch_end_stop_refusal
from lmtrain.utils.callback_state_keys import refuse_shared_state_keys
from lmtrain.utils.checks import accepted_arguments
from lmtrain.utils.logger_checks import refuse_unwritable_folder
from lmtrain.utils.logger_runs import (
    is_mlflow_entry,
    is_tensorboard_entry,
    mlflow_kwargs,
    tensorboard_kwargs,
)
from lmtrain.utils.wandb_run import is_wandb_entry, wandb_kwargs

log = logging.getLogger(__name__)

LMTRAIN_SOURCE = Path(__file__).resolve().parents[1]  # src/lmtrain
# The Trainer settings that pick the hardware, which most of its refusals are about.
DEVICE_SETTINGS = ("accelerator", "devices", "precision", "strategy", "num_nodes")
# What a class raises about the values it was called with: a wrong type, a missing or unknown
# keyword (TypeError), a value out of range (ValueError, Lightning's MisconfigurationException),
# an unknown name looked up in a table (KeyError: transformers' activations), an optional package
# that is not installed (ImportError: flash-attn). Any other type (AttributeError, RuntimeError,
# IndexError, ...) is taken for a bug and keeps its traceback. transformers' configs check their
# fields (types, RoPE's head_dim) with huggingface_hub's strict dataclasses, whose errors
# (StrictDataclassError) hold the field's own TypeError or ValueError as text.
USER_VALUE_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    ImportError,
    MisconfigurationException,
    StrictDataclassError,
)


def config_entry_error(err: BaseException) -> LMTrainError | None:
    """One line for a failure of Hydra's instantiate that comes from the user's config, or None.

    Hydra wraps whatever the `_target_` raised in an InstantiationException whose text runs to
    several lines and names the entry only as `full_key:`. Which failures are the user's:
    - `_target_` that cannot be imported (a typo, a package not installed);
    - an error of USER_VALUE_ERRORS raised outside lmtrain's code: by the class's signature
      (`+callbacks.lr_monitor.bogus=1`) or by a library given the value (Lightning's Trainer for
      `trainer.devices=abc`, transformers for an activation name);
    - an ImportError anywhere (a package the setting needs is missing).
    Raised inside lmtrain's own code, anything but an LMTrainError is a bug (lmtrain refuses each
    user value it checks with an LMTrainError; a value it fails on without one is a missing
    check): None, and the trace stays.
    """
    wrapper = find_cause(err, InstantiationException)
    if wrapper is None:
        return None
    text = str(wrapper)
    key_match = re.search(r"^full_key: (.+)$", text, re.MULTILINE)
    key = key_match.group(1).strip() if key_match else "the config entry"
    target_match = re.search(r"(?:target|for) '([^']+)'|partial\(([^,]+),", text)
    target = next((g for g in target_match.groups() if g), "?") if target_match else "?"
    cause = wrapper.__cause__
    if text.startswith("Error locating target"):
        root = _root_cause(cause)
        # No such module (or a package not installed), or no such name in the module; any
        # other error is a module that exists but fails to import: a bug in it.
        no_name = isinstance(root, AttributeError) and not _raised_in_lmtrain(root)
        if not (isinstance(root, ImportError) or no_name):
            return None
        target_key = f"{key}._target_" if key_match else "_target_"
        return LMTrainError(
            f"{target_key}={target!r} cannot be imported ({type(root).__name__}: "
            f"{first_line(root)}): check the class path's spelling, or install the package "
            "that provides it"
        )
    if cause is None:  # Hydra's own refusal of the entry's shape (`_target_: 1`, `_args_: 3`)
        return LMTrainError(f"{key} cannot be instantiated ({first_line(wrapper)}): check {key}")
    if not isinstance(cause, USER_VALUE_ERRORS):
        return None
    if not isinstance(cause, ImportError) and _raised_in_lmtrain(cause):
        return None
    short = target.rsplit(".", 1)[-1]
    # A strict dataclass names the field on its first line and the problem on the next.
    said = " ".join(str(cause).split()) if isinstance(cause, StrictDataclassError) else None
    return LMTrainError(
        f"{key} ({target}) refused its settings ({type(cause).__name__}: "
        f"{said or first_line(cause)}): "
        f"check the values under {key} against the arguments of {short}"
    )


def _root_cause(err: BaseException | None) -> BaseException | None:
    """The innermost error of `err`'s chain (`raise ... from`)."""
    while err is not None and err.__cause__ is not None:
        err = err.__cause__
    return err


def _raised_in_lmtrain(err: BaseException) -> bool:
    """Whether the line that raised `err` (its traceback's innermost frame) is lmtrain's."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(LMTRAIN_SOURCE)


def _instantiate_group(
    cfg: DictConfig | None,
    group: str,
    kind: type,
    extra_kwargs: Callable[[DictConfig], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Each entry of the config group `group` (`callbacks`, `logger`) that is not null, by its
    name; each must give a `kind` (Lightning's Callback, Logger): anything else failed later,
    inside Lightning, as a traceback (`'dict' object has no attribute 'on_exception'`)."""
    if cfg is not None and "_target_" in cfg:  # one entry's keys, not named entries
        raise LMTrainError(
            f"{group}._target_={cfg.get('_target_')!r}: the {group} config holds one entry's keys "
            f"where named entries belong: nest them under a name (`csv: {{_target_: ...}}`), as "
            f"the files in configs/{group}/ do"
        )
    objects = {}
    for name, entry in (cfg or {}).items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("Instantiating %s.%s <%s>", group, name, entry._target_)
            kwargs = extra_kwargs(entry) if extra_kwargs else {}
            made = hydra.utils.instantiate(entry, **kwargs)
            if not isinstance(made, kind):
                raise LMTrainError(
                    f"{group}.{name}._target_={entry._target_!r} gave {describe(made)}, not a "
                    f"Lightning {kind.__name__}: give {group}.{name} the class path of a "
                    f"{kind.__name__}, or remove it (~{group}.{name})"
                )
            objects[str(name)] = made
        elif entry is not None:
            # `+callbacks.foo=1`: a value where a class's config belongs.
            raise LMTrainError(
                f"{group}.{name}={entry!r} has no _target_: give it one "
                f"({group}.{name}._target_=<class path>), or remove it (~{group}.{name})"
            )
    return objects


def describe(value: Any) -> str:
    """`value` in a few words: its text when that is short, and its type."""
    text, kind = repr(value), type(value).__name__
    return f"{text} (a {kind})" if len(text) <= 40 and "\n" not in text else f"a {kind}"


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    """The callbacks of `cfg`; an EarlyStopping decides after each validation
    (`early_stopping_kwargs`). Two that would save their state under one key are refused by
    their names here (`refuse_shared_state_keys`), not by the Trainer in several lines."""
    callbacks = _instantiate_group(cfg, "callbacks", Callback, early_stopping_kwargs)
    refuse_shared_state_keys(callbacks)
    return list(callbacks.values())


def early_stopping_kwargs(entry: DictConfig) -> dict[str, Any]:
    """`check_on_train_epoch_end=False` for an EarlyStopping (or a subclass) whose entry leaves
    it unset; a true one refused. Lightning's default decides at the training epoch's end when
    validation runs once an epoch: after lmtrain's checkpoint callback wrote that validation's
    last.ckpt, so a run preempted at the epoch's last step (its resume runs the validation
    first) or killed in between resumed past the decision and trained on. At the validation's
    end EarlyStopping decides before the checkpoint callback does (Lightning calls checkpoint
    callbacks last), and last.ckpt holds the decision."""
    try:
        target = pydoc.locate(str(entry._target_))
    except pydoc.ErrorDuringImport:
        return {}  # Hydra's instantiate fails on it, and says why in one line
    if not (isinstance(target, type) and issubclass(target, EarlyStopping)):
        return {}
    if entry.get("check_on_train_epoch_end"):  # its exact class is refused in callback_checks
        raise LMTrainError(epoch_end_stop_refusal(f"callbacks.{entry._key()}"))
    accepted = accepted_arguments(target)  # a subclass of fixed arguments keeps its own choice
    if accepted is not None and "check_on_train_epoch_end" not in accepted:
        return {}
    return {"check_on_train_epoch_end": False}


def instantiate_loggers(
    cfg: DictConfig | None, run_cfg: DictConfig | None = None, resuming: bool = False
) -> list[Logger]:
    """The loggers of `cfg`; given the run's config, W&B, MLflow and TensorBoard ones also get
    the run's name and a sweep's group (lmtrain.utils.wandb_run, lmtrain.utils.logger_runs), and
    `resuming` continues the run folder's W&B and MLflow runs, and hides in TensorBoard the steps
    the resumed run logs again."""

    def extra_kwargs(entry: DictConfig) -> dict[str, Any]:
        refuse_unwritable_save_dir(entry)
        if run_cfg is None:
            return {}
        if is_wandb_entry(entry):
            return wandb_kwargs(entry, run_cfg, resuming)
        if is_mlflow_entry(entry):
            return mlflow_kwargs(entry, run_cfg, resuming)
        if is_tensorboard_entry(entry):
            return tensorboard_kwargs(entry, run_cfg, resuming)
        return {}

    loggers = list(_instantiate_group(cfg, "logger", Logger, extra_kwargs).values())
    for logger in loggers:
        drop_unset_anonymous(logger)  # W&B warned of it on every run
    return loggers


def refuse_unwritable_save_dir(entry: DictConfig) -> None:
    """One line, before the logger is made, for a `save_dir` it could not write to: each library
    fails on its own later (TensorBoard and CSV with a traceback at the first write, W&B by
    quietly moving the run to /tmp/wandb). MLflow's save_dir is its local store, used only
    without a tracking URI: MLFlowLogger checks it itself."""
    save_dir = entry.get("save_dir")
    if save_dir is not None and not is_mlflow_entry(entry):
        key = f"logger.{entry._key()}.save_dir"
        if not str(save_dir).strip():  # the working directory: a checkout, or another run's
            raise LMTrainError(
                f"{key}='' names no folder: leave it as configured (the run folder), or pass a "
                "folder"
            )
        refuse_unwritable_folder(save_dir, key)


def instantiate_trainer(cfg: DictConfig, **kwargs: Any) -> Trainer:
    """The Trainer of `cfg` (the trainer group); Lightning's refusal of a setting (no GPU for
    `accelerator: gpu`, more devices than there are, an unknown strategy) is one line.
    Without a ModelCheckpoint among `callbacks` (`callbacks.model_checkpoint=null`,
    `callbacks=none`), checkpointing is off unless the trainer group turns it on: Lightning
    would add its own, writing a .ckpt at every validation into the logger's folder (W&B's,
    MLflow's, csv/), where neither resume nor the run-folder checks look."""
    callbacks = kwargs.get("callbacks")
    own = callbacks is not None and any(isinstance(c, ModelCheckpoint) for c in callbacks)
    if callbacks is not None and not own and "enable_checkpointing" not in cfg:
        kwargs["enable_checkpointing"] = False
    try:
        # "partial": Lightning's time spans as dicts (`max_time: {minutes: 30}`, a time-based
        # `val_check_interval`) reach it as plain dicts, which it checks with isinstance(dict);
        # as DictConfigs they failed (ConfigAttributeError, a TypeError). Targets are still built.
        return hydra.utils.instantiate(cfg, _convert_="partial", **kwargs)
    except Exception as err:
        refusal = find_cause(err, MisconfigurationException)
        if refusal is None:
            raise
        raise LMTrainError(
            f"the trainer settings were refused ({first_line(refusal)}): {refusal_hint(refusal)}"
        ) from None


def refusal_hint(refusal: BaseException) -> str:
    """What to check for Lightning's refusal of the Trainer's settings: the settings its message
    names (`gradient_clip_algorithm`, a Timer's `duration`: trainer.max_time), else the ones
    that pick the hardware, which most refusals are about. The hint named those four whatever
    was refused."""
    text = first_line(refusal)
    names = [k for k in signature(Trainer.__init__).parameters if re.search(rf"\b{k}\b", text)]
    if "Timer(duration=" in text:
        names.append("max_time")
    # lmtrain passes the Trainer its callbacks and loggers itself: those are groups of their own.
    other = [k for k in names if k not in (*DEVICE_SETTINGS, "callbacks", "logger")]
    groups = [
        f"the {k} (`{k}.<name>=null` drops one)" for k in ("callbacks", "logger") if k in names
    ]
    if other or groups:
        return "check " + ", ".join([*(f"trainer.{k}" for k in other), *groups])
    return (
        "check trainer.accelerator, trainer.devices, trainer.precision and trainer.strategy "
        "(trainer=cpu runs anywhere)"
    )
