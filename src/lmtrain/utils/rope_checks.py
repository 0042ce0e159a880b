"""The head size of a fresh model with rotary position embeddings (Llama, Mistral, Qwen2, ...):
RoPE turns pairs of a head's dimensions, so a fully rotated head of an odd size cannot work.
transformers refuses only odd sizes above 4, in a line naming no lmtrain setting, after the
corpus is tokenized; size 3 was a tensor-shape error from the model build (which leaves a run
folder), and size 1 trained with RoPE broadcast instead of rotated, without a word."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

# model.config keys that hold RoPE's settings as a mapping (transformers 5 reads either).
ROPE_MAPPINGS = ("rope_parameters", "rope_scaling")


@functools.cache
def default_config(model_type: str) -> PretrainedConfig | None:
    """The config class's defaults for `model_type`, which say whether it uses RoPE, its share
    of rotated dimensions and the sizes the user left out; None where it cannot be built."""
    try:
        return CONFIG_MAPPING[model_type]()
    except Exception:  # a class that needs arguments: nothing to go on, left to the build
        return None


def user_value(config: Mapping[str, Any], defaults: PretrainedConfig, name: str) -> Any:
    """model.config's value for the HF attribute `name`, under its own name or an alias of the
    class's attribute_map; the class's default where the user set neither."""
    for key, target in (defaults.attribute_map or {}).items():
        if target == name and config.get(key) is not None:
            return config[key]
    value = config.get(name)
    return getattr(defaults, name, None) if value is None else value


def rotated_share(config: Mapping[str, Any], defaults: PretrainedConfig) -> Any:
    """The share of a head's dimensions RoPE turns (partial_rotary_factor): the user's, at the
    top of model.config or in its RoPE mapping, or else the class's default; 1.0 for all."""
    if config.get("partial_rotary_factor") is not None:
        return config["partial_rotary_factor"]
    for key in ROPE_MAPPINGS:
        mapping = config.get(key)
        if isinstance(mapping, Mapping) and mapping.get("partial_rotary_factor") is not None:
            return mapping["partial_rotary_factor"]
    mapping = getattr(defaults, "rope_parameters", None)
    return mapping.get("partial_rotary_factor", 1.0) if isinstance(mapping, Mapping) else 1.0


def rope_head_problems(model_type: Any, config: Mapping[str, Any]) -> list[str]:
    """One line when a fresh RoPE model's heads (model.config.head_dim, or hidden_size over
    num_attention_heads) are fully rotated and of an odd size. Heads that do not split evenly
    are `HEAD_SPLITS`' line; a partly rotated head is transformers' to check (GPT-NeoX trains
    with an odd rotated share, Phi does not)."""
    defaults = default_config(model_type) if isinstance(model_type, str) else None
    if defaults is None or not getattr(defaults, "rope_parameters", None):  # GPT-2: no RoPE
        return []
    width = user_value(config, defaults, "hidden_size")
    heads = user_value(config, defaults, "num_attention_heads")
    # Qwen3's and Gemma's classes fix the head size (128, 256) whatever the width; Llama's
    # derives it from the width (None).
    explicit = config.get("head_dim", getattr(type(defaults), "head_dim", None))
    if isinstance(explicit, int) and not isinstance(explicit, bool) and explicit > 0:
        size, what = explicit, f"model.config.head_dim={explicit} is odd"
        instead = f"an even head size: pass an even head_dim, such as {explicit + 1}"
    elif all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, heads)):
        if width % heads:
            return []
        size = width // heads
        what = (
            f"model.config.hidden_size={width} / model.config.num_attention_heads={heads} "
            f"gives heads of {size} dimensions"
        )
        even = -(-width // (2 * heads)) * 2 * heads  # the next multiple of 2 * heads
        instead = (
            f"an even number: pass a hidden_size that is a multiple of {2 * heads} (such as "
            f"{even}), or a num_attention_heads that splits it into heads of an even size"
        )
    else:
        return []
    share = rotated_share(config, defaults)
    if not isinstance(share, int | float) or int(size * share) != size or size % 2 == 0:
        return []
    return [
        f"{what}, and the rotary position embeddings (RoPE) of model.model_type={model_type} "
        f"need {instead}"
    ]
