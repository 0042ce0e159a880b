"""peft's adapter folder (`lmtrain.export merge=false`), loaded back as a checkpoint is.

adapter_config.json names the base model and the LoRA settings; adapter_model.safetensors holds
the adapters. `PeftModel.from_pretrained` trusts both: it loads any weight the file holds (a base
layer's weight added there overwrote the base after its digest was checked), quietly leaves out
adapters the file lacks or the config does not place (evaluated as untrained), and takes options
lmtrain never trains with (use_dora, layers_to_transform). So the folder is read as a checkpoint
is (`lora.model_from_checkpoint`): adapter_config.json held to the rules of lmtrain's own settings
and to the settings its lmtrain.json records, the base built as it trained (`lora_base`: the HF
config the export recorded) and checked by its digest, the adapters placed by peft from those
settings, and the file's weight names compared with theirs before anything is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lmtrain.errors import LMTrainError
from lmtrain.models.lora import detail, lora_config, weights_digest
from lmtrain.models.lora_base import HF_CONFIG_KEY, load_base
from lmtrain.models.lora_settings import (
    expression_error,
    is_alpha,
    is_dropout,
    is_rank,
    is_targets,
    same_setting,
)
from lmtrain.models.lora_targets import ALL_LINEAR, adapted_layers, all_linear_layers
from lmtrain.models.model_folder import json_kind, json_object, unusable_file
from lmtrain.utils.export_dir import EXPORT_META

if TYPE_CHECKING:
    from peft import PeftModel

ADAPTER_CONFIG = "adapter_config.json"
AGAIN = "export the checkpoint again with lmtrain.export merge=false"
# adapter_config.json's keys that lmtrain's settings decide, lmtrain.json's names for them, and
# what their rules ask for (`lmtrain.models.lora_settings`).
SETTINGS = {
    "r": ("r", is_rank, "an integer >= 1"),
    "lora_alpha": ("alpha", is_alpha, "a finite number > 0"),
    "lora_dropout": ("dropout", is_dropout, "a probability in [0, 1)"),
    "target_modules": ("target_modules", is_targets, "a list of module names or an expression"),
}
# Keys that name things, or that the loader decides (fan_in_fan_out from the layers' type; the
# task, which plain peft users leave unset: the model is a causal LM); every other key must hold
# what lmtrain writes, peft's default.
NAMING = {"peft_type", "base_model_name_or_path", "inference_mode", "peft_version", "auto_mapping"}
NAMING |= {"fan_in_fan_out", "task_type"}
# What lmtrain.json's `info.lora` may hold: its keys and their JSON kinds.
RECORD: dict[str, tuple[type, str]] = {
    "base_digest": (str, "a string"),
    "settings": (Mapping, "an object"),
    HF_CONFIG_KEY: (Mapping, "an object"),
}


def load_adapter_folder(folder: str | Path, recorded: Mapping[str, Any] | None = None) -> PeftModel:
    """An adapter folder's model: its base from adapter_config.json, built with the HF config
    and checked against the digest its lmtrain.json records (`recorded`, that file's
    `info.lora`: adapters on other base weights give other numbers, with no error from peft),
    then its adapters, every weight of them and nothing else."""
    from peft import get_peft_model
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    folder = Path(folder)
    record = checked_record(folder, recorded)
    base, settings = adapter_settings(folder)
    check_recorded_settings(folder, settings, record.get("settings"))
    subject = f"the base model {base!r} of ckpt_path={str(folder)!r} (adapter_config.json)"
    advice = "point its base_model_name_or_path at the model the adapters were trained on"

    def unusable(why: str) -> LMTrainError:
        return unusable_file(folder, EXPORT_META, f"its info.lora.hf_config builds no model: {why}")

    model = load_base(base, record.get(HF_CONFIG_KEY), unusable, subject, advice, advice)
    check_recorded_settings(folder, settings, record.get("settings"), model)
    digest = record.get("base_digest")
    if digest is not None and weights_digest(model) != digest:
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} holds LoRA adapters of other base weights than those now "
            f"at {base!r} (its lmtrain.json records their digest): put the base model they were "
            "trained on back there, or " + advice
        )
    config = lora_config(model, settings)
    config.inference_mode = True  # as peft's from_pretrained: the adapters do not train
    weights = load_peft_weights(str(folder), device="cpu")  # unreadable: model_folder's line
    try:
        peft_model = get_peft_model(model, config)
        set_peft_model_state_dict(peft_model, adapter_weights(folder, peft_model, weights))
    except (ValueError, RuntimeError) as err:  # peft's refusal of the targets, torch's shapes
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} holds adapters that do not fit its {ADAPTER_CONFIG} "
            f"({detail(err)}): {AGAIN}"
        ) from None
    return peft_model.eval()


def adapter_settings(folder: Path) -> tuple[str, dict[str, Any]]:
    """The base model and lmtrain's LoRA settings of `folder`'s adapter_config.json, each held
    to lmtrain's rules, and every other option to what lmtrain writes."""
    from peft import LoraConfig

    config = json_object(folder, ADAPTER_CONFIG)
    if config.get("peft_type") != "LORA":
        why = f"its peft_type is {shown(config.get('peft_type'))}, not 'LORA'"
        raise unusable_file(folder, ADAPTER_CONFIG, f"{why}: lmtrain loads LoRA adapters only")
    base = config.get("base_model_name_or_path")
    if not (isinstance(base, str) and base):
        why = f"its base_model_name_or_path is {shown(base)}, not a folder or hub id"
        raise unusable_file(folder, ADAPTER_CONFIG, why)
    settings = {}
    for key, (name, rule, kind) in SETTINGS.items():
        if not rule(config.get(key)):
            wrong = expression_error(config.get(key))  # the regular expression's error, if any
            why = f"its {key} is {shown(config.get(key))}, not {kind}"
            raise unusable_file(folder, ADAPTER_CONFIG, f"{why} ({wrong})" if wrong else why)
        settings[name] = config[key]
    defaults = json.loads(json.dumps(LoraConfig().to_dict(), default=list))
    for key, value in sorted(config.items()):
        default = defaults.get(key)  # a key this peft does not know: unset is all it may be
        if key in SETTINGS or key in NAMING or value == default or not (value or default):
            continue
        why = f"its {key} is {shown(value)}, an option lmtrain never trains with ({shown(default)})"
        raise unusable_file(folder, ADAPTER_CONFIG, why)
    return base, settings


def check_recorded_settings(
    folder: Path, settings: dict[str, Any], recorded: Any, model: nn.Module | None = None
) -> None:
    """adapter_config.json's r, lora_alpha and target_modules must be those lmtrain.json
    records (the checkpoint's): other ones place or scale other adapters. peft writes a recorded
    'all-linear' as the layers it stands for, which need the base `model` (None: checked later)."""
    if not isinstance(recorded, Mapping):
        return
    for key, (name, _, _) in SETTINGS.items():
        given, wanted = settings[name], recorded.get(name)
        if name == "target_modules" and wanted == ALL_LINEAR and not isinstance(given, str):
            # peft's list, full names (short ones in older peft): the layers each one adapts
            if model is None or adapted_layers(model, given) == set(all_linear_layers(model)):
                continue
            wanted = all_linear_layers(model)
        if name != "dropout" and not same_setting(given, wanted):
            why = (
                f"its {key} is {shown(settings[name])}, but lmtrain.json records "
                f"{shown(recorded.get(name))} (model.peft.{name})"
            )
            raise unusable_file(folder, ADAPTER_CONFIG, why)


def adapter_weights(
    folder: Path, peft_model: PeftModel, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The adapters of `state` (adapter_model's weights, peft's names) for `peft_model`, which
    must hold each adapter its settings place and nothing else. A copy of an embedding layer
    (peft saves it beside adapters on an embedding) may be there only as the base has it."""
    from peft.utils import get_peft_model_state_dict

    expected = get_peft_model_state_dict(peft_model, save_embedding_layers=False)
    copies = get_peft_model_state_dict(peft_model, save_embedding_layers=True)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(
        key
        for key, tensor in state.items()
        if key not in expected and not (key in copies and same_tensor(tensor, copies[key]))
    )
    if missing or unexpected:
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} does not hold the adapters its {ADAPTER_CONFIG} "
            f"describes (missing {missing[:3]}, unexpected {unexpected[:3]}): {AGAIN}"
        )
    return {key: state[key] for key in expected}


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b.to(a.device))


def checked_record(folder: Path, recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """lmtrain.json's `info.lora` (None or {}: none), each entry of the kind lmtrain writes."""
    record = dict(recorded or {})
    for key, (kind, named) in RECORD.items():
        if record.get(key) is not None and not isinstance(record[key], kind):
            why = f"its info.lora.{key} is {json_kind(record[key])}, not {named}"
            raise unusable_file(folder, EXPORT_META, why)
    return record


def with_base_config(info: dict[str, Any], model: Any) -> dict[str, Any]:
    """`info` for an adapter export's lmtrain.json, its `lora` entry with the HF config of the
    adapted model's base (as JSON values, without an `auto_map`, whose code is never copied),
    which loading builds the base with: the base's config.json need not be the one that
    trained."""
    config = json.loads(model.config.to_json_string(use_diff=False))
    config.pop("auto_map", None)
    return {**info, "lora": {**dict(info.get("lora") or {}), HF_CONFIG_KEY: config}}


def shown(value: Any) -> str:
    """A value from a JSON file as the line shows it: short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
