"""`model.config` and `model.model_type` beside `model.pretrained`: applied, or refused.

They were ignored when weights were loaded, while the run's saved config showed them:
`+model.config={resid_pdrop: 0.3, n_layer: 8}` fine-tuned the folder's 1-layer model without
dropout, exit code 0. Now, as Hugging Face's `from_pretrained(path, resid_pdrop=0.3)` does, a
key of the folder's config class overrides config.json when it keeps the architecture (dropout,
attention dropout, rope scaling, ...). A key that changes a shape (n_layer, n_embd, vocab_size,
tie_word_embeddings, ...) or the head split cannot apply to the saved weights, a key the class
does not know would be kept as a plain attribute and do nothing, and a model_type other than
the folder's would be ignored: each is refused, naming the key. A key set to the folder's own
value is accepted (a gpt2_tiny copy given `pretrained:` with the folder's sizes).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.pretrained import NO_REMOTE_CODE, loading_error
from lmtrain.utils.checks import names_local_path
from lmtrain.utils.model_config_keys import refuse_settings_elsewhere, unknown_keys_line

# Head counts of transformers' configs: a change keeps every weight's shape (GPT-2's n_head) but
# splits the trained projections into other heads, so the weights compute something else.
HEAD_KEYS = ("n_head", "num_attention_heads", "num_key_value_heads", "n_kv_heads", "num_heads")


def check_pretrained_overrides(model: Mapping[str, Any] | DictConfig) -> None:
    """The up-front check of a run's `model` node (before data preparation): the same refusals
    as loading the weights gives, from the folder's config.json alone (no weights read). Reads
    nothing when model.pretrained is unset or nothing overrides it."""
    if isinstance(model, DictConfig):
        model = OmegaConf.to_container(model, resolve=True)  # type: ignore[assignment]
    pretrained = model.get("pretrained")
    if isinstance(pretrained, str) and pretrained:
        overridden_config(pretrained, model.get("model_type"), model.get("config"))


def overridden_config(
    pretrained: str, model_type: str | None, config: Mapping[str, Any] | None
) -> PretrainedConfig | None:
    """model.pretrained's config with `config`'s keys applied (for `from_pretrained(config=)`),
    or None when neither `model_type` nor `config` asks for anything (config.json as saved)."""
    if not model_type and not config:
        return None
    refuse_settings_elsewhere(config)  # dtype: trainer.precision's; attn_implementation
    subject = f"model.pretrained={pretrained!r}"
    if not isinstance(config, Mapping | None):
        raise LMTrainError(
            f"model.config={config!r} is not a mapping: pass keys of the model's config class "
            "(model.config.resid_pdrop=0.1), or model.config=null"
        )
    local = Path(pretrained).expanduser()
    source = str(local) if names_local_path(pretrained) or local.exists() else pretrained
    try:
        saved = AutoConfig.from_pretrained(source, **NO_REMOTE_CODE)
    except Exception as err:  # a folder or hub id: transformers raises anything
        advice = "pass a folder written by save_pretrained (or lmtrain.export), or a hub id"
        failure = loading_error(subject, source, err, advice, advice)
        if failure is None:
            raise
        raise failure from None
    if model_type and model_type != saved.model_type:
        raise LMTrainError(
            f"model.model_type={model_type!r} is not the model_type of {subject} "
            f"({saved.model_type!r} in its config.json): drop it (model.model_type=null, as "
            "model=pretrained sets); pretrained weights keep their own architecture"
        )
    typed = copy.deepcopy(dict(config or {}))  # transformers edits a dict it is given
    if not typed:
        return None
    current, kept = saved, {}
    # Each converted key goes over the config as the keys before it left it.
    for key, value in typed.items():
        move = moved(current, key, value)
        if move:
            current = type(saved).from_dict({**current.to_dict(), **move})
        else:
            kept[key] = value
    overridden = type(saved).from_dict({**current.to_dict(), **kept})
    refuse_unknown_config_keys(saved.model_type, overridden, typed, subject)
    refuse_shape_changes(saved, typed, subject)
    return overridden


def moved(saved: PretrainedConfig, key: str, value: Any) -> dict[str, Any]:
    """The keys transformers turns `key` into (Llama's legacy `rope_theta` and `rope_scaling`
    into `rope_parameters`), with the saved config's values changed as `key` changes them; none
    for a key kept as it is. Applied over config.json, such a key did nothing: the folder's own
    `rope_parameters` won, while the run's config showed the typed value. What `key` sets is
    found against the class built with another value of it (its default may be `value`)."""
    cls = type(saved)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    other = value * 2 + 1 if number else None
    try:
        given = cls(**{key: copy.deepcopy(value)}).to_dict()  # transformers edits a dict given
        reference = (cls() if other is None or other == value else cls(**{key: other})).to_dict()
    except Exception:  # a value the class refuses: from_dict names it
        return {}
    if key in given:
        return {}
    changes, saved_keys = {}, saved.to_dict()
    for name, new in given.items():
        before, old = reference.get(name), saved_keys.get(name)
        if new == before:
            continue
        if isinstance(new, dict) and isinstance(before, dict) and isinstance(old, dict):
            new = {**old, **{k: v for k, v in new.items() if before.get(k) != v}}
        changes[name] = new
    return changes


def refuse_unknown_config_keys(
    model_type: str, built: PretrainedConfig, typed: Mapping[str, Any], pretrained: str = ""
) -> None:
    """Refuse `model.config` keys the config class does not know (`unknown_keys_line`: kept
    as plain attributes, they did nothing). `pretrained`: the `model.pretrained=...` the keys
    would override, named in the line."""
    line = unknown_keys_line(model_type, built, typed, pretrained)
    if line:
        raise LMTrainError(line)


def refuse_shape_changes(saved: PretrainedConfig, typed: Mapping[str, Any], subject: str) -> None:
    """Refuse the keys of `typed` that change a weight's shape (or the set of weights) of the
    model `saved` describes, each tried alone on the meta device (no memory, no weights), and
    head counts, which split the same weights into other heads."""
    shapes = parameter_shapes(saved)
    changing = []
    for key, value in typed.items():
        if getattr(saved, key, object()) == value:
            continue  # the folder's own value: nothing changes
        one = type(saved).from_dict({**saved.to_dict(), key: value})
        if key in HEAD_KEYS or parameter_shapes(one, subject, key) != shapes:
            changing.append(key)
    if changing:
        shown = ", ".join(f"model.config.{key}={typed[key]!r}" for key in changing)
        saved_values = ", ".join(f"{key}={getattr(saved, key, None)!r}" for key in changing)
        raise LMTrainError(
            f"{shown} would change the architecture of the weights of {subject} (its config.json "
            f"has {saved_values}): drop {'them' if len(changing) > 1 else 'it'} (model=pretrained "
            "sets model.config=null); with pretrained weights, model.config takes only settings "
            "that keep the architecture (dropout, ...)"
        )


def parameter_shapes(
    config: PretrainedConfig, subject: str = "", key: str = ""
) -> dict[str, tuple[int, ...]]:
    """Each parameter's name and shape for `config`, built on the meta device (tied weights once:
    untying adds a parameter)."""
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except Exception as err:  # any value transformers' model code refuses
        raise LMTrainError(
            f"model.config.{key}={getattr(config, key, None)!r} does not build {subject}'s "
            f"architecture ({type(err).__name__}: {first_line(err)}): fix or drop "
            f"model.config.{key}"
        ) from None
    return {name: tuple(p.shape) for name, p in model.named_parameters()}
