"""Settings `lmtrain.eval` would read past without a word, refused before it loads anything.

The tokenizer: eval reads any corpus with the model's own, so a `data.tokenizer...` override
typed with `data=<name>` was dropped (the model's own data config refuses `+data.tokenizer.<key>`
the same way, in lmtrain.eval).

The val split's length: eval reports over the whole val split, so that its numbers compare
across runs and with the final val/loss of training: it sets the trainer's `limit_val_batches`
to the whole split itself. `trainer.limit_val_batches=2` typed for a quicker look was ignored,
and the whole split read. The trainer config eval composes sets the key for training's
validations (20 batches), so only a typed override is refused, and one that asks for the whole
split (1.0) passes.
"""

from __future__ import annotations

from typing import Any

from omegaconf import Container, DictConfig, OmegaConf

from lmtrain.utils.checks import Problems
from lmtrain.utils.typed_overrides import typed_overrides, typed_value


def check_eval_val_limit(limit: Any, problems: Problems) -> None:
    """A typed `trainer.limit_val_batches` (composed as `limit`) that would stop eval short of
    the whole val split; 1.0 and null (Lightning's default, the whole split) pass."""
    typed = typed_value("trainer.limit_val_batches")
    whole = limit is None or (isinstance(limit, float) and limit == 1.0)
    if typed is None or whole:
        return
    problems.add(
        f"trainer.limit_val_batches={typed}: eval reads the whole val split (its numbers "
        "compare across runs): drop it, or evaluate a smaller split (+data.source.val_fraction="
        "<share>, or data=<a smaller corpus>)"
    )


def check_eval_tokenizer(data: DictConfig, problems: Problems) -> None:
    """The `data.tokenizer...` overrides typed with `data=<name>` (composed as `data`), all
    named in one line, each key with its composed value."""
    settings = []
    for override in typed_overrides():
        name, equals, _ = override.partition("=")
        key = name.lstrip("+~")
        if key != "data.tokenizer" and not key.startswith("data.tokenizer."):
            continue
        value = OmegaConf.select(data, key.removeprefix("data."), default=None)
        if name.startswith("~") or not equals or isinstance(value, Container):
            settings.append(override.lstrip("+"))  # a deletion, a mapping: as typed
        else:
            settings.append(f"{key}={value!r}")  # as lmtrain.eval's own_data_config names it
    if settings:
        problems.add(
            f"{', '.join(settings)} cannot apply: eval reads text with the model's own "
            "tokenizer; drop it"
        )
