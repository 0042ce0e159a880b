"""Which changed non-number settings of a resumed model add, remove or reshape weights.

`model_differences` refuses a resume whose integer settings differ from the checkpoint's, and
lets floats (dropout, ...) change. Flags were let through too, yet `tie_word_embeddings`
(either way), Llama's `attention_bias` or `mlp_bias`, GPT-2's `add_cross_attention` change the
set of weights: the resume ended after data preparation in torch's "loaded state dict contains a
parameter group that doesn't match" or "Missing key(s) ... q_proj.bias" traceback, leaving a run
folder. No list of such keys is kept: each changed setting is tried alone on the checkpoint's
config and the model built on the meta device (`parameter_shapes`, the check that refuses the same
keys beside model.pretrained), so a flag that keeps every weight (`use_cache`) may still change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from lmtrain.errors import LMTrainError
from lmtrain.models.pretrained_overrides import parameter_shapes

# Entries of a config's to_dict() that describe the file, not the model: never tried.
METADATA_KEYS = frozenset({"transformers_version", "architectures", "dtype", "torch_dtype"})


def is_number(value: Any) -> bool:
    """An int or float setting (not a flag): `model_differences` judges these itself."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def built_config(entries: Mapping[str, Any]) -> PretrainedConfig | None:
    """The config class of `entries["model_type"]` holding `entries`, or None when they build
    none (a damaged entry is refused elsewhere, by whoever reads it)."""
    rest = dict(entries)
    try:
        return AutoConfig.for_model(rest.pop("model_type"), **rest)
    except Exception:  # transformers raises KeyError, ValueError, TypeError, ... on bad entries
        return None


def shapes_of(entries: Mapping[str, Any]) -> dict[str, tuple[int, ...]] | None:
    """Each parameter's name and shape of the model `entries` describe; None if none builds
    (Lightning's restore then says what it says, as before this check)."""
    config = built_config(entries)
    if config is None:
        return None
    try:
        return parameter_shapes(config)
    except LMTrainError:
        return None


def weight_changing_keys(
    saved: Mapping[str, Any], current: Mapping[str, Any], keys: Iterable[str]
) -> list[str]:
    """The keys of `keys` (settings that differ between the checkpoint's config `saved` and this
    run's `current`) whose value here, set alone in `saved`, changes a parameter's name or
    shape. Numbers and metadata are skipped: nothing is built when no other key differs."""
    values = {key: (saved.get(key), current.get(key)) for key in keys}
    tried = [
        key
        for key, pair in values.items()
        if key not in METADATA_KEYS and not any(is_number(v) for v in pair)
    ]
    if not tried or "model_type" not in saved:
        return []
    before = shapes_of(saved)
    if before is None:
        return []
    changing = []
    for key in tried:
        # A key this run's config lacks takes its class default, as it did here.
        changed = {k: v for k, v in saved.items() if k != key}
        after = shapes_of({**changed, key: current[key]} if key in current else changed)
        if after is not None and after != before:
            changing.append(key)
    return changing
