"""What `model.peft` may ask for: LoRA's settings, checked before anything is built.

The same rules hold an adapter folder's adapter_config.json (`lmtrain.models.lora_folder`) and a
checkpoint's recorded settings (`lmtrain.models.lora.model_from_checkpoint`) to what a run of
lmtrain could have trained: a file from disk is read as untrusted as a command line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from lmtrain.errors import LMTrainError

# configs/model/peft/lora.yaml's values, for `model.peft=lora` (the string, not the group).
from lmtrain.utils.model_keys import LORA_DEFAULTS as DEFAULTS

INF = float("inf")  # model.peft.alpha=inf (or nan) scaled the adapters' output to NaN


def lora_settings(
    peft: Mapping[str, Any] | str | None, freeze: Mapping[str, Any], pretrained: str | None
) -> dict[str, Any] | None:
    """The LoRA settings `model.peft` asks for, or None for none; one line when they cannot work.

    `model/peft=lora` (the config group) gives a dict; `model.peft=lora` (a plain value) gives the
    string, which means the group's defaults. `model/peft=none` gives an empty dict.
    """
    if peft is None or peft == "none" or (isinstance(peft, Mapping) and not peft):
        return None
    if not isinstance(peft, Mapping) and peft != "lora":
        raise LMTrainError(
            f"model.peft={peft!r} is unknown: use model/peft=lora, or model/peft=none"
        )
    settings = {**DEFAULTS, **(peft if isinstance(peft, Mapping) else {})}
    unknown = sorted(set(settings) - set(DEFAULTS))
    if unknown:
        raise LMTrainError(f"model.peft has unknown keys {unknown}: use {', '.join(DEFAULTS)}")
    r, alpha, dropout = settings["r"], settings["alpha"], settings["dropout"]
    if not is_rank(r):
        raise LMTrainError(f"model.peft.r={r!r} is not a rank: pass an integer >= 1 (8, 16, ...)")
    if not is_alpha(alpha):
        raise LMTrainError(f"model.peft.alpha={alpha!r}: pass a finite number > 0 (e.g. 2 x r)")
    if not is_dropout(dropout):
        raise LMTrainError(f"model.peft.dropout={dropout!r}: pass a probability in [0, 1)")
    targets = settings["target_modules"]
    if (wrong := expression_error(targets)) is not None:
        raise LMTrainError(
            f"model.peft.target_modules={targets!r} is not a regular expression ({wrong}): fix "
            "it (a string is matched against whole module names), or pass a list of module "
            "names ([c_attn,c_fc])"
        )
    if not (targets is None or is_targets(targets)):
        raise LMTrainError(
            f"model.peft.target_modules={targets!r}: pass a list of module names ([c_attn,c_fc]), "
            "or null for the architecture's defaults"
        )
    frozen = [f"{k}={str(v).lower()}" for k, v in dict(freeze or {}).items() if v]
    if frozen:
        raise LMTrainError(
            f"model.freeze.{' and model.freeze.'.join(frozen)} with LoRA: LoRA already freezes "
            "the whole base model (only the adapters train): drop model.freeze, or use "
            "model/peft=none to fine-tune the unfrozen weights"
        )
    if not pretrained:
        raise LMTrainError(
            "LoRA (model/peft=lora) needs model.pretrained: it adapts frozen pretrained weights, "
            "and its checkpoints refer to them; use experiment=finetune_lora or model=pretrained "
            "model.pretrained=<folder or hub id>"
        )
    return settings


# The rules of each setting, which adapter folders' adapter_config.json is held to as well.
def is_rank(r: Any) -> bool:
    return isinstance(r, int) and not isinstance(r, bool) and r >= 1


def is_alpha(alpha: Any) -> bool:
    return isinstance(alpha, int | float) and not isinstance(alpha, bool) and 0 < alpha < INF


def is_dropout(dropout: Any) -> bool:
    return isinstance(dropout, int | float) and 0 <= dropout < 1


def is_targets(targets: Any) -> bool:
    """A string (peft's regular expression) or a non-empty list of module names."""
    listed = isinstance(targets, list | tuple) and all(isinstance(t, str) for t in targets)
    expression = isinstance(targets, str) and expression_error(targets) is None
    return expression or (listed and len(targets) > 0)


def expression_error(targets: Any) -> str | None:
    """Why a string of target modules is no regular expression (re's words), None for one that
    is, or for a list: peft matches a string with re.fullmatch while it builds the model, and
    its re.error came as a traceback."""
    if not isinstance(targets, str):
        return None
    try:
        re.compile(targets)
    except re.error as err:
        return str(err)
    return None


def same_setting(a: Any, b: Any) -> bool:
    """Whether two values of a setting are the same; target_modules lists in any order (peft
    makes a set of them)."""
    if is_targets(a) and is_targets(b) and not isinstance(a, str) and not isinstance(b, str):
        return set(a) == set(b)
    return a == b
