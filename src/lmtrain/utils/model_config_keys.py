"""`model.config` keys that a Hugging Face config class keeps and does nothing with, or that
another setting decides: refused before any work, each in one line.

transformers keeps an unknown keyword as a plain attribute and builds the default model, so
`+model.config.n_layers=8` (Hydra's own hint for a key the config lacks) trained 2 layers and saved
`n_layers: 8` in the run's config; it was refused once the model was built, after the corpus was
tokenized. `dtype` built a fresh model's weights in float16 under `trainer.precision=32-true`
(AdamW's updates rounded away), and `attn_implementation` lost to `model.attn_implementation`
while the run's config still showed it. The config checks (`lmtrain.utils.model_checks`) and the
model build (`lmtrain.models.hf`, `lmtrain.models.pretrained_overrides`) share these lines.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING, CONFIG_MAPPING_NAMES

from lmtrain.errors import LMTrainError

PRECISION = (
    "would set the weights' dtype, which trainer.precision decides (16-bit weights round "
    "AdamW's updates away): drop it and pass trainer.precision (32-true, bf16-mixed, ...)"
)
ATTENTION = (
    "is not what the model is built with (model.attn_implementation is): drop it and pass "
    "model.attn_implementation={value}"
)
# Keys that transformers' config classes take but another setting of ours decides: the advice.
# The model families of configs/model/, each with its smallest config there.
SHIPPED_MODEL_TYPES = {"gpt2": "gpt2_tiny", "llama": "llama_tiny"}
SETTINGS_ELSEWHERE = {
    "dtype": PRECISION,
    "torch_dtype": PRECISION,
    "attn_implementation": ATTENTION,
    "_attn_implementation": ATTENTION,
}


def settings_elsewhere(config: Mapping[str, Any] | None) -> list[str]:
    """One line for each key of `config` that another setting decides (`SETTINGS_ELSEWHERE`)."""
    if not isinstance(config, Mapping):
        return []
    return [
        f"model.config.{key}={value!r} " + SETTINGS_ELSEWHERE[key].format(value=value)
        for key, value in config.items()
        if key in SETTINGS_ELSEWHERE
    ]


def refuse_settings_elsewhere(config: Mapping[str, Any] | None) -> None:
    """Raise the first of `settings_elsewhere`, for a model built without the config checks."""
    lines = settings_elsewhere(config)
    if lines:
        raise LMTrainError(lines[0])


def known_config_keys(model_type: str, cls: type) -> set[str]:
    """The settings config class `cls` (of `model_type`) knows: its defaults, aliases and
    arguments. A saved config.json may hold more (GPT-2's `n_ctx`, `task_specific_params`),
    which transformers keeps as plain attributes."""
    known = set(AutoConfig.for_model(model_type).to_dict()) | set(getattr(cls, "attribute_map", {}))
    return known | set(inspect.signature(cls.__init__).parameters)


def unknown_keys_line(
    model_type: str, built: PretrainedConfig, typed: Mapping[str, Any], pretrained: str = ""
) -> str | None:
    """The line refusing the keys of `typed` (model.config) that `built`'s config class does not
    know, None when it knows them all. A key is unknown when it is neither an argument nor an
    alias of the class, nor in its defaults, and stays in the built config as it was typed:
    legacy names that transformers converts (Llama's `rope_theta`) do not stay. `pretrained`:
    the `model.pretrained=...` the keys would override, named in the line."""
    defaults = AutoConfig.for_model(model_type).to_dict()
    cls = type(built)
    known = known_config_keys(model_type, cls)
    built_keys = built.to_dict()
    unknown = [key for key in typed if key in built_keys and key not in known]
    if not unknown:
        return None
    of = pretrained or f"model.model_type={model_type}"
    family = other_family(model_type, unknown) if not pretrained else None
    if family is not None:  # another family's keys: merged in, or typed for the wrong model
        own = SHIPPED_MODEL_TYPES.get(model_type, f"<a {model_type} config of yours>")
        return (
            f"{', '.join(f'model.config.{key}' for key in unknown)} "
            f"{'are' if len(unknown) > 1 else 'is'} {family}'s, not a setting of transformers' "
            f"{cls.__name__} ({of}): drop {'them' if len(unknown) > 1 else 'it'} "
            "(~model.config.<key>); where model.model_type was set over another model config, "
            f"whose keys stayed, select a {model_type} one instead (model={own}, or `override "
            f"/model: {own}` in an experiment's defaults)"
        )
    names = sorted(set(defaults) | set(getattr(cls, "attribute_map", {})))
    hints = [difflib.get_close_matches(key, names, n=1) for key in unknown]
    shown = ", ".join(
        f"model.config.{key}" + (f" (did you mean {hint[0]}?)" if hint else "")
        for key, hint in zip(unknown, hints, strict=True)
    )
    return (
        f"{shown} is not a setting of transformers' {cls.__name__} ({of}): fix the name; "
        f"its settings are {cls.__name__}'s arguments"
    )


def other_family(model_type: str, keys: list[str]) -> str | None:
    """The config class of another of the shipped model families (configs/model/) that knows
    every one of `keys`: an experiment that set `model.model_type=llama` over the default
    gpt2_tiny kept GPT-2's keys, and the line asked to fix names the user never typed."""
    for other in SHIPPED_MODEL_TYPES:
        if other == model_type:
            continue
        cls = CONFIG_MAPPING[other]
        if all(key in known_config_keys(other, cls) for key in keys):
            return cls.__name__
    return None


def fresh_model_key_problems(model_type: Any, config: Mapping[str, Any]) -> list[str]:
    """The config checks' `unknown_keys_line` for a fresh model (no model.pretrained: its keys
    are checked against the folder's config.json by `check_pretrained_overrides`), from the
    config class alone (no model built). Nothing where the class cannot be built from the
    keys: the model build names that value."""
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES:
        return []
    typed = {k: v for k, v in config.items() if v is not None and k not in SETTINGS_ELSEWHERE}
    if not typed:
        return []
    try:
        built = AutoConfig.for_model(model_type, **copy.deepcopy(typed))  # edits its dicts
    except Exception:  # a value the class refuses: left to the build, which names it
        return []
    line = unknown_keys_line(model_type, built, typed)
    return [line] if line else []
