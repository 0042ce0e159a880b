"""The frozen base model of LoRA adapters, read again as the run trained it.

LoRA checkpoints and adapter folders hold the adapters alone and refer to their base model (a
folder or hub id), whose weights a digest pins. The base's config.json is not the model that
trained, though: a run's `model.config` overrides (layer_norm_epsilon, max_position_embeddings,
dropout) change the model without changing a weight, and config.json may be edited after
training; read from it, eval gave other numbers (or refused a Llama trained on a longer context)
with nothing said. So the base is built with the HF config recorded beside the adapters: a
checkpoint's `hf_config`, an adapter export's `info.lora.hf_config` in lmtrain.json. Only an
adapter folder exported before that record reads the base's config.json, as peft does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.pretrained import load_weights

# Where the base's HF config is recorded: in a checkpoint's CHECKPOINT_KEY entry, and in an
# adapter export's lmtrain.json `info.lora`.
HF_CONFIG_KEY = "hf_config"


def load_base(
    base: str,
    hf_config: Any,
    unusable: Callable[[str], LMTrainError],
    subject: str,
    advice: str,
    damaged: str,
    **kwargs: Any,
) -> PreTrainedModel:
    """`load_weights(base)` (`subject`, `advice`, `damaged`: its wording) built with the
    recorded `hf_config`, or with the base's config.json where None is recorded. A record that
    builds no config is `unusable(<why>)`, the caller's line for its own file."""
    if hf_config is None:
        return load_weights(base, subject, advice, damaged, **kwargs)
    config = recorded_config(hf_config, unusable)
    return load_weights(base, subject, advice, damaged, config=config, **kwargs)


def recorded_config(hf_config: Any, unusable: Callable[[str], LMTrainError]) -> PretrainedConfig:
    """The HF config a record holds, built as a whole model's checkpoint builds its own
    (`model_from_contents`); an `auto_map` in it is dropped: lmtrain never runs a folder's code."""
    try:
        values = dict(hf_config)
        values.pop("auto_map", None)
        return AutoConfig.for_model(values.pop("model_type"), **values)
    except Exception as err:  # a KeyError, TypeError or ValueError from a damaged record
        raise unusable(f"{type(err).__name__}: {first_line(err)}") from None


def base_config_record(model: Any) -> dict[str, Any]:
    """The HF config of an adapted model's base as JSON values, for an adapter export's
    lmtrain.json (`HF_CONFIG_KEY`), without an `auto_map` (its code is never copied)."""
    record = json.loads(model.config.to_json_string(use_diff=False))
    record.pop("auto_map", None)
    return record
