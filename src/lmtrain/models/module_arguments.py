"""Checks of `CausalLMModule`'s arguments that no config check covers when it is built from
Python (`lmtrain.train` checks the config first; see `lmtrain.utils.config_checks`)."""

from __future__ import annotations

import copy
import difflib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import PretrainedConfig, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import model_path, read_checkpoint_file
from lmtrain.models.checkpoint_contents import CHECKPOINT_KEY, check_contents, tokenizer_from_files
from lmtrain.models.optimizers import OptimizerParts
from lmtrain.utils.checks import Problems
from lmtrain.utils.model_checks import check_model, check_pretrained_is_text, check_seq_len_warmup
from lmtrain.utils.model_config_keys import SETTINGS_ELSEWHERE, known_config_keys
from lmtrain.utils.model_keys import FREEZE_KEYS
from lmtrain.utils.optimizer_checks import check_factories
from lmtrain.utils.optimizer_values import trains_every_parameter

MAPPINGS = {"config": '{"n_layer": 4, "n_embd": 256}', "freeze": '{"embeddings": True}'}
YAML_SUFFIXES = (".yaml", ".yml")
# The module's arguments that the config checks' `check_model` checks as `model.<key>`.
CHECKED_SETTINGS = ("config", "seq_len_warmup", "compile", "model_type", "pretrained")
# The architecture a module built from Python gets when nothing else names one.
DEFAULT_MODEL_TYPE = "gpt2"
# Keys of a built model's config that describe its file or another setting, not the model
# (`described_model`): the weights' dtype is trainer.precision's, the attention the module's.
NOT_SETTINGS = {"transformers_version", "architectures", "model_type", *SETTINGS_ELSEWHERE}
# True while load_from_checkpoint builds the module from a checkpoint's own arguments.
LOADING: ContextVar[bool] = ContextVar("LOADING", default=False)
# What Lightning's load_from_checkpoint reads besides what lmtrain's readers need.
LIGHTNING_KEY = "pytorch-lightning_version"


def own_copies(*arguments: Any) -> tuple[Any, ...]:
    """Deep copies of the module's mutable arguments, taken before `save_hyperparameters` keeps
    them: it kept the caller's dicts, so a dict changed after (a loop building modules from one
    dict) was what checkpoints saved, and load_from_checkpoint rebuilt another model."""
    return tuple(copy.deepcopy(argument) for argument in arguments)


def described_model(
    model_type: str | None, config: dict[str, Any] | None, pretrained: Any, model: Any
) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The `model_type`, `config` and `pretrained` (as text) the hyperparameters record, from
    which load_from_checkpoint rebuilds the model. `model_type` is gpt2 when nothing else names
    the architecture: the default had been gpt2 even beside a pretrained Llama folder, which was
    then refused as another model_type. A given `model` records its own model_type and config:
    a Llama's checkpoint recorded gpt2 and no config, and was rebuilt as a 124M GPT-2."""
    pretrained = pretrained_text(pretrained)
    if isinstance(config, Mapping) and LOADING.get():  # trained before they were refused
        config = {k: v for k, v in config.items() if k not in SETTINGS_ELSEWHERE}
    if model is None:
        default = model_type is None and not pretrained
        return (DEFAULT_MODEL_TYPE if default else model_type), config, pretrained
    hf_config = getattr(model, "config", None)
    if not isinstance(hf_config, PretrainedConfig):  # not an HF model: recorded as given
        return model_type or DEFAULT_MODEL_TYPE, config, pretrained
    own = hf_config.model_type
    if model_type is not None and model_type != own:
        raise LMTrainError(
            f"model_type={model_type!r} is not the model_type of the given model "
            f"({type(model).__name__}: {own!r}): leave model_type out (the model's is recorded)"
        )
    if config is None and not pretrained:  # a config.json's extras (n_ctx) are no settings
        known = known_config_keys(own, type(hf_config)) - NOT_SETTINGS
        config = {k: v for k, v in hf_config.to_dict().items() if k in known and k[:1] != "_"}
    return own, config, pretrained


def pretrained_text(pretrained: Any) -> str | None:
    """`pretrained` as checkpoints keep it, text: a `Path` from Python failed with an
    AttributeError (and would have been pickled into the hyperparameters); a number is refused
    in one line, as `model.pretrained=123` is."""
    if isinstance(pretrained, os.PathLike):
        return str(os.fspath(pretrained))
    problems = Problems()
    check_pretrained_is_text(pretrained, problems)
    problems.raise_if_any()
    return pretrained


def check_module_arguments(
    tokenizer: Any,
    freeze: Mapping[str, Any] | None,
    optimizer: Any,
    scheduler: Any,
    hparams: Mapping[str, Any],
) -> dict[str, Any]:
    """Refuse a tokenizer that is not one, unknown `freeze` keys, an optimizer or schedule that
    cannot be called as the module calls them (OptimizerParts is checked by its own split), and
    the `hparams` the config checks refuse (`CHECKED_SETTINGS`, as `model.<key>`): they failed
    deep in transformers, after the data, or at the first step. Return `freeze` as a dict."""
    settings = {key: hparams.get(key) for key in CHECKED_SETTINGS}  # checked as the CLI's
    problems = Problems()
    given = {"config": settings.get("config"), "freeze": freeze}
    for key, value in given.items():  # a list of overrides failed in dict() or transformers
        if value is not None and not isinstance(value, Mapping):
            problems.add(
                f"model.{key}={value!r:.60} is not a mapping: pass a dict such as {MAPPINGS[key]}"
            )
    problems.raise_if_any()
    check_model({**settings, "freeze": freeze}, problems)  # names them as model.<key>
    check_seq_len_warmup(settings, None, problems)
    problems.raise_if_any()
    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise LMTrainError(
            f"tokenizer={tokenizer!r:.40} is not a tokenizer: pass datamodule.tokenizer (after "
            "datamodule.prepare_data()) or a transformers tokenizer"
        )
    freeze = dict(freeze or {})
    unknown = sorted(set(freeze) - FREEZE_KEYS)
    if unknown:
        raise LMTrainError(
            f"model.freeze has unknown keys {unknown}: use embeddings and first_n_blocks"
        )
    parts = isinstance(optimizer, OptimizerParts)
    every_parameter_trains = trains_every_parameter(hparams.get("peft"), freeze)
    check_factories(None if parts else optimizer, scheduler, every_parameter_trains)
    return freeze


def refuse_pickle(weights_only: bool) -> None:
    """`load_from_checkpoint` reads weights-only, whatever it is asked: files are untrusted."""
    if not weights_only:
        raise LMTrainError(
            "lmtrain reads checkpoints weights-only: leave out weights_only (it was turned off)"
        )


def refuse_meta(map_location: Any) -> None:
    """The meta device holds no data, so no weight can be copied into its tensors: torch's
    copy error read as a state that does not fit, blaming a sound checkpoint."""
    targets = map_location.values() if isinstance(map_location, Mapping) else [map_location]
    for target in targets:
        try:
            meta = target is not None and torch.device(target).type == "meta"
        except (TypeError, RuntimeError):  # a function, or a name torch does not know
            meta = False
        if meta:
            raise LMTrainError(
                f"map_location={map_location!r} loads no weights (the meta device holds no "
                "data): pass map_location='cpu' or a device such as 'cuda'"
            )


def load_module(
    load: Callable[..., Any],
    module_class: type,
    checkpoint_path: str | Path,
    hparams_file: str | Path | None,
    weights_only: bool,
    kwargs: dict[str, Any],
    options: dict[str, Any],
) -> Any:
    """`CausalLMModule.load_from_checkpoint`: Lightning's (`load`, with its `options`), given the
    keywords `module_class` takes only, weights-only, onto a device that holds data, a file
    `load_model` would read (checked as it checks one, `checked_checkpoint`), the checkpoint's
    tokenizer and a YAML `hparams_file` (`loading_arguments`), and a state that does not fit as
    one line."""
    refuse_pickle(weights_only)
    refuse_meta(options.get("map_location"))
    refuse_unknown_keywords(module_class, kwargs)
    path, tokenizer_files = checked_checkpoint(checkpoint_path)
    chosen = "config" in kwargs or hparams_file is not None  # other sizes than the saved ones
    kwargs = loading_arguments(module_class, (tokenizer_files, path), hparams_file, kwargs)
    token = LOADING.set(True)
    try:
        with same_sizes(path, chosen), adapters_alone(path):
            return load(path, hparams_file=None, weights_only=True, **options, **kwargs)
    finally:
        LOADING.reset(token)


@contextmanager
def adapters_alone(checkpoint_path: str | Path) -> Iterator[None]:
    """Lightning's refusal of `strict=True` for a LoRA checkpoint (the module sets
    strict_loading=False: the file holds the adapters alone, the base comes from its
    model.pretrained) as one line: it was a ValueError traceback."""
    try:
        yield
    except ValueError as err:
        if "strict_loading" not in str(err):
            raise
        raise LMTrainError(
            f"strict=True cannot load {str(checkpoint_path)!r}: it is a LoRA checkpoint, which "
            "holds the adapters alone (the base weights come from its model.pretrained): leave "
            "out strict (or pass strict=False)"
        ) from None


def checked_checkpoint(checkpoint_path: Any) -> tuple[str, Any]:
    """The checkpoint file's path and its tokenizer's files, once the path and contents pass
    the checks `load_model` runs (a missing path, None, or a dict without Lightning's entries
    was a TypeError or KeyError traceback from Lightning)."""
    path = model_path(checkpoint_path)
    if Path(path).is_dir():
        raise LMTrainError(
            f"ckpt_path={path!r} is a folder (an export?): load_from_checkpoint takes a .ckpt "
            "file; load a folder with lmtrain.models.checkpoint.load_model"
        )
    checkpoint = check_contents(read_checkpoint_file(path), path, resume=False)
    if LIGHTNING_KEY not in checkpoint:
        raise LMTrainError(
            f"ckpt_path={path!r} lacks {LIGHTNING_KEY}, which Lightning's load_from_checkpoint "
            "reads (not saved by a Trainer): load it with lmtrain.models.checkpoint.load_model"
        )
    return path, checkpoint[CHECKPOINT_KEY]["tokenizer_files"]  # check_contents: there


def loading_arguments(
    module_class: type,
    saved_tokenizer: tuple[Any, str],
    hparams_file: str | Path | None,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    """`load_from_checkpoint`'s keywords, as Lightning is then given them.

    - The tokenizer is the checkpoint's (`saved_tokenizer`: its files and the checkpoint's path,
      built only here) unless `tokenizer=` (or `model=`) is given: the model's vocabulary is
      the tokenizer's size, which the hyperparameters do not hold.
    - A YAML `hparams_file` is read here, as keywords under the given ones, each one checked as
      a keyword is (`refuse_unknown_keywords`: a misspelt key was dropped without a word):
      Lightning reads it into an OmegaConf node, which cannot hold the tokenizer. It may be a
      run's config (what lmtrain's loggers save as `hparams.yaml`), whose `model` node holds
      the arguments. Any other file is refused: Lightning's `.csv` route replaced the
      checkpoint's arguments instead of overriding them."""
    if hparams_file is not None:
        path = Path(hparams_file)
        if path.suffix.lower() not in YAML_SUFFIXES:
            raise LMTrainError(
                f"hparams_file={str(path)!r} is not a YAML file (.yaml, .yml): pass a run's "
                "hparams.yaml, or leave hparams_file out (the checkpoint holds the arguments)"
            )
        values = hparams_from_file(path)
        refuse_unknown_keywords(module_class, values, f"hparams_file={str(path)!r}")
        kwargs = values | kwargs
    if kwargs.get("tokenizer") is None and kwargs.get("model") is None:
        kwargs["tokenizer"] = tokenizer_from_files(*saved_tokenizer)
    return kwargs


def hparams_from_file(path: Path) -> dict[str, Any]:
    """The module's arguments in a YAML file, less `_target_` and factories (`optimizer`,
    `scheduler`: the checkpoint's hyperparameters leave them out too)."""
    try:  # not Lightning's load_hparams_from_yaml: it reads with yaml.full_load, into OmegaConf
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise LMTrainError(
            f"hparams_file={str(path)!r} cannot be read ({type(error).__name__}): pass a run's "
            "hparams.yaml, or leave hparams_file out (the checkpoint holds the arguments)"
        ) from None
    if not isinstance(values, dict):
        raise LMTrainError(
            f"hparams_file={str(path)!r} holds no mapping of arguments: pass a run's "
            "hparams.yaml, or leave hparams_file out (the checkpoint holds the arguments)"
        )
    model = values.get("model")
    if isinstance(model, dict) and "_target_" in model:  # a run's config
        values = model
    return {
        key: value
        for key, value in values.items()
        if not str(key).startswith("_") and not (isinstance(value, dict) and "_target_" in value)
    }


def refuse_unknown_keywords(module_class: type, kwargs: dict[str, Any], source: str = "") -> None:
    """Lightning drops the keywords `__init__` does not take, without a word: a misspelt
    `optimzer=` left AdamW in place, for a run the user meant to train with something else.
    `module_class`: the class loading (a subclass's own arguments are its to take); `source`:
    where the keys came from when not keywords (an `hparams_file`)."""
    parameters = inspect.signature(module_class.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    takes = sorted(p.name for p in parameters if p.name != "self")
    name = module_class.__name__
    for key in map(str, kwargs):
        if key not in takes:
            close = difflib.get_close_matches(key, takes, n=1)
            where = f"{source} holds {key}" if source else f"load_from_checkpoint({key}=...)"
            raise LMTrainError(
                f"{where}: {name} takes no {key}"
                + (f"; did you mean {close[0]}?" if close else f": it takes {', '.join(takes)}")
            )


@contextmanager
def same_sizes(checkpoint_path: str | Path, chosen: bool) -> Iterator[None]:
    """torch's state-dict mismatch (500 characters of missing keys and shapes) as one line: the
    module was built from other arguments than the checkpoint's (`chosen`: `config=` or
    `hparams_file=` given), or the checkpoint holds a state another model's."""
    try:
        yield
    except RuntimeError as err:
        if "Error(s) in loading state_dict" not in str(err):
            raise
        detail = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), "")
        advice = (
            "leave out config= and hparams_file= (the checkpoint's own arguments build its "
            "model), or pass strict=False to load what fits"
            if chosen
            else "its weights are not those of the model its own arguments build (another "
            "tool's, or a damaged file): pass strict=False to load what fits"
        )
        raise LMTrainError(
            f"{str(checkpoint_path)!r} does not fit the model the arguments build "
            f"({detail[:160]}): {advice}"
        ) from None
