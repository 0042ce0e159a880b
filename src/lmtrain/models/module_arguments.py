"""Checks of `CausalLMModule`'s arguments that no config check covers when it is built from
Python (`lmtrain.train` checks the config first; see `lmtrain.utils.config_checks`)."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from transformers import PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import checkpoint_tokenizer
from lmtrain.utils.checks import Problems
from lmtrain.utils.model_checks import check_model, check_seq_len_warmup
from lmtrain.utils.optimizer_checks import check_factories

FREEZE_KEYS = {"embeddings", "first_n_blocks"}


def check_module_arguments(
    tokenizer: Any,
    freeze: Mapping[str, Any] | None,
    optimizer: Any,
    scheduler: Any,
    parts: bool,
    settings: dict[str, Any],
) -> dict[str, Any]:
    """Refuse a tokenizer that is not one, unknown `freeze` keys, an optimizer or schedule that
    cannot be called as the module calls them (`parts`: `optimizer` is OptimizerParts, checked
    by its own split), and `settings` (`config`, `seq_len_warmup`, `compile`) the config checks
    refuse: they failed deep in transformers or at the first step. Return `freeze` as a dict."""
    problems = Problems()
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
    check_factories(None if parts else optimizer, scheduler)
    return freeze


def refuse_pickle(weights_only: bool) -> None:
    """`load_from_checkpoint` reads weights-only, whatever it is asked: files are untrusted."""
    if not weights_only:
        raise LMTrainError(
            "lmtrain reads checkpoints weights-only: leave out weights_only (it was turned off)"
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
    keywords `module_class` takes only, weights-only, the checkpoint's tokenizer and a YAML
    `hparams_file` (`loading_arguments`), and a state that does not fit as one line."""
    refuse_unknown_keywords(module_class, kwargs)
    chosen = "config" in kwargs or hparams_file is not None  # other sizes than the saved ones
    kwargs, hparams_file = loading_arguments(checkpoint_path, hparams_file, weights_only, kwargs)
    with same_sizes(checkpoint_path, chosen):
        return load(
            checkpoint_path, hparams_file=hparams_file, weights_only=True, **options, **kwargs
        )


def loading_arguments(
    checkpoint_path: str | Path,
    hparams_file: str | Path | None,
    weights_only: bool,
    kwargs: dict[str, Any],
) -> tuple[dict[str, Any], str | Path | None]:
    """`load_from_checkpoint`'s keywords and `hparams_file`, as Lightning is then given them.

    - Reading with pickle (`weights_only` turned off) is refused.
    - The tokenizer is the checkpoint's unless `tokenizer=` (or `model=`) is given: the model's
      vocabulary is the tokenizer's size, which the hyperparameters do not hold.
    - A YAML `hparams_file` is read here, as keywords under the given ones: Lightning reads it
      into an OmegaConf node, which cannot hold the tokenizer. It may be a run's config (what
      lmtrain's loggers save as `hparams.yaml`), whose `model` node holds the arguments."""
    refuse_pickle(weights_only)
    if hparams_file is not None and Path(hparams_file).suffix.lower() in (".yaml", ".yml"):
        kwargs = hparams_from_file(Path(hparams_file)) | kwargs
        hparams_file = None
    if kwargs.get("tokenizer") is None and kwargs.get("model") is None:
        kwargs["tokenizer"] = checkpoint_tokenizer(checkpoint_path)
    return kwargs, hparams_file


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


def refuse_unknown_keywords(module_class: type, kwargs: dict[str, Any]) -> None:
    """Lightning drops the keywords `__init__` does not take, without a word: a misspelt
    `optimzer=` left AdamW in place, for a run the user meant to train with something else.
    `module_class`: the class loading (a subclass's own arguments are its to take)."""
    parameters = inspect.signature(module_class.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    takes = sorted(p.name for p in parameters if p.name != "self")
    name = module_class.__name__
    for key in kwargs:
        if key not in takes:
            close = difflib.get_close_matches(key, takes, n=1)
            raise LMTrainError(
                f"load_from_checkpoint({key}=...): {name} takes no {key}"
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
