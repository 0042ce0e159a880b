"""LoRA fine-tuning with Hugging Face's `peft` (`model/peft=lora`): only small adapters train.

The pretrained model (`model.pretrained`) is frozen and peft's `get_peft_model` adds low-rank
adapters beside the chosen layers. A checkpoint then holds the adapters (and their optimizer
state) only, with the settings, a reference to the base model and a digest of its weights: the
base is read again from that reference when a run resumes or a tool loads the checkpoint (built
with the checkpoint's HF config, `lmtrain.models.lora_base`), and a base whose weights changed
since is refused. Export merges the adapters into a plain HF model (`merge_and_unload`), or
writes peft's adapter folder (`merge=false`), which `lmtrain.models.lora_folder` reads back.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from lmtrain.errors import LMTrainError, RankAgreedError, first_line
from lmtrain.models.checkpoint_contents import CHECKPOINT_KEY, LORA_KEY, WRITTEN_BY
from lmtrain.models.lora_base import load_base
from lmtrain.models.lora_settings import DEFAULTS as DEFAULTS  # re-exported
from lmtrain.models.lora_settings import lora_settings, same_setting
from lmtrain.models.lora_targets import (
    adapted_tied_layers,
    check_untied_targets,
    resolve_targets,
)
from lmtrain.models.pretrained import listed
from lmtrain.utils.strategy_checks import LORA_UNDER_FSDP

if TYPE_CHECKING:  # peft is imported where LoRA is used: 0.2 s off every other run's startup
    from peft import LoraConfig, PeftModel

log = logging.getLogger(__name__)

# What a resume may change; any other setting changes the adapters' shapes or placement.
RESUMABLE_CHANGES = {"dropout"}


def add_adapters(model: PreTrainedModel, settings: dict[str, Any], base: str) -> PeftModel:
    """`model` frozen, with LoRA adapters on the `settings`' target modules (`base`: its
    `model.pretrained`, recorded in checkpoints); logs trainable vs total parameters."""
    from peft import get_peft_model

    targets = resolve_targets(model, settings["target_modules"])
    check_untied_targets(model, targets)
    on_meta = any(p.is_meta for p in model.parameters())
    digest = None if on_meta else weights_digest(model)
    peft_model = get_peft_model(model, lora_config(model, {**settings, "target_modules": targets}))
    # Plain attributes of the PeftModel: what checkpoints record about the base.
    peft_model.lmtrain_lora = {
        "settings": {**settings, "target_modules": targets},
        "base_model": base_reference(base),
        "base_digest": digest,
    }
    if not on_meta:
        trainable, total = peft_model.get_nb_trainable_parameters()
        log.info(
            "LoRA on %s (r=%d): %s trainable parameters of %s (%.2f%%)",
            targets, settings["r"], f"{trainable:,}", f"{total:,}", 100 * trainable / total,
        )  # fmt: skip
    return peft_model


def lora_config(model: nn.Module, settings: dict[str, Any]) -> LoraConfig:
    """peft's LoraConfig for our settings (GPT-2's Conv1D layers store weights transposed)."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings["r"],
        lora_alpha=settings["alpha"],
        lora_dropout=settings["dropout"],
        target_modules=settings["target_modules"],
        fan_in_fan_out=any(isinstance(m, Conv1D) for m in model.modules()),
        task_type="CAUSAL_LM",
    )


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every weight (names, dtypes, shapes and bytes): the base model's identity."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def base_reference(pretrained: str) -> str:
    """A local folder as an absolute path (tools run from other folders), a hub id as it is."""
    local = Path(pretrained).expanduser()
    return str(local.resolve()) if local.exists() else pretrained


def check_not_sharded(model: nn.Module) -> None:
    """trainer=fsdp shards the base per block; peft's adapter layers are not wired for it here."""
    if is_adapted(model):
        raise RankAgreedError(LORA_UNDER_FSDP)


# -- checkpoints --------------------------------------------------------------------------------
def adapters_only(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Drop the frozen base weights from a checkpoint of `module` (they are the base model's),
    and record the settings, the base model and its digest instead."""
    model = getattr(module, "model", None)
    if not is_adapted(model):
        return
    frozen = frozen_names(module)  # once, not per state_dict entry
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k not in frozen}
    checkpoint[CHECKPOINT_KEY][LORA_KEY] = dict(model.lmtrain_lora)


def frozen_names(module: nn.Module) -> set[str]:
    """The names of `module`'s frozen parameters, a tied weight under each of its names."""
    return {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def check_resume(module: nn.Module, checkpoint: dict[str, Any], ckpt_path: str | None) -> None:
    """Before Lightning loads a checkpoint into `module` (non-strictly for LoRA): it must be
    LoRA exactly when this run is, on the same base weights, with the same adapters."""
    saved = (checkpoint.get(CHECKPOINT_KEY) or {}).get(LORA_KEY)
    model = getattr(module, "model", None)
    given = f"ckpt_path={ckpt_path!r}" if ckpt_path else "the checkpoint"
    if not is_adapted(model):
        if saved:
            raise LMTrainError(
                f"{given} holds LoRA adapters: resume with model/peft=lora (and the run's "
                "model.peft settings), or merge them first with lmtrain.export and fine-tune "
                "that folder (model.pretrained=<export>)"
            )
        return
    if not saved:
        raise LMTrainError(
            f"{given} holds a whole model, not LoRA adapters: resume it without model/peft=lora, "
            "or export it (lmtrain.export) and start LoRA from that folder"
        )
    current = model.lmtrain_lora
    changed = [
        f"{key}={saved['settings'].get(key)!r} in the checkpoint but {value!r} here"
        for key, value in current["settings"].items()
        if key not in RESUMABLE_CHANGES and not same_setting(saved["settings"].get(key), value)
    ]
    if changed:
        raise LMTrainError(
            f"{given} holds other LoRA adapters: model.peft.{', model.peft.'.join(changed)}: "
            "resume with the checkpoint's model.peft settings"
        )
    if saved.get("base_digest") != current["base_digest"]:
        raise LMTrainError(
            f"{given} holds LoRA adapters of other base weights than model.pretrained="
            f"{current['base_model']!r} ({saved.get('base_model')!r} when saved): pass the base "
            "model the run started from"
        )
    frozen = frozen_names(module)
    check_no_base_weights(given, frozen, checkpoint["state_dict"])
    expected = {n for n, _ in module.named_parameters(remove_duplicate=False)}
    missing = sorted(expected - frozen - set(checkpoint["state_dict"]))
    if missing:
        raise LMTrainError(f"{given} lacks LoRA weights {missing[:3]}: pass a whole checkpoint")


def check_no_base_weights(given: str, frozen: set[str], state: Mapping[str, Any]) -> None:
    """A LoRA checkpoint holds adapters only (`adapters_only`): a weight of the frozen base in
    it would replace the base its digest pinned, loaded non-strictly without a word."""
    if base_weights := sorted(set(state) & frozen):
        raise LMTrainError(
            f"{given} holds weights of the frozen base model ({listed(base_weights)}), which a "
            f"LoRA checkpoint never holds (its base is read from its base model): {WRITTEN_BY}"
        )


def model_from_checkpoint(
    saved: dict[str, Any],
    state: dict[str, torch.Tensor],
    path: str | Path,
    hf_config: Mapping[str, Any] | None = None,
) -> PeftModel:
    """The adapted model of a LoRA checkpoint: its base model read again from its reference,
    built with the checkpoint's `hf_config` (the base's config.json where the checkpoint has
    none) so that it is the model that trained, checked
    against its digest, and the checkpoint's adapters (`state`, PeftModel names)."""
    from peft import get_peft_model

    base, settings = saved.get("base_model"), saved.get("settings")
    if not (isinstance(base, str) and isinstance(settings, Mapping) and settings):
        raise LMTrainError(
            f"ckpt_path={str(path)!r} holds a LoRA entry without its base model or settings: "
            f"{WRITTEN_BY}"
        )
    given = f"ckpt_path={str(path)!r}"
    try:
        settings = lora_settings(settings, {}, base)
    except LMTrainError as err:
        raise LMTrainError(f"{given} holds bad LoRA settings: {err}") from None
    back = f"put that model back at {base!r}"  # as training read it: saved dtype, no custom code
    subject = f"the base model {base!r} of the LoRA adapters in {given}"

    def unusable(why: str) -> LMTrainError:
        return LMTrainError(
            f"{given}: its {CHECKPOINT_KEY}.hf_config builds no model ({why}): {WRITTEN_BY}"
        )

    model = load_base(base, hf_config, unusable, subject, back, back, dtype="auto")
    if weights_digest(model) != saved.get("base_digest"):
        raise LMTrainError(
            f"{given} holds LoRA adapters of other base weights than those now at {base!r}: put "
            "the base model the run started from back there"
        )
    try:
        targets = resolve_targets(model, settings["target_modules"])
    except LMTrainError as err:
        raise LMTrainError(f"{given} holds bad LoRA settings: {err}") from None
    try:
        peft_model = get_peft_model(
            model, lora_config(model, {**settings, "target_modules": targets})
        )
        check_no_base_weights(given, frozen_names(peft_model), state)
        result = peft_model.load_state_dict(state, strict=False)
    except (ValueError, RuntimeError) as err:  # peft's refusal, torch's shapes
        raise LMTrainError(
            f"{given} holds adapters that do not fit its settings ({detail(err)}): {WRITTEN_BY}"
        ) from None
    missing = sorted(set(result.missing_keys) - frozen_names(peft_model))
    if missing or result.unexpected_keys:
        raise LMTrainError(
            f"{given} does not hold the adapters its settings describe (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}): {WRITTEN_BY}"
        )
    peft_model.lmtrain_lora = dict(saved)
    return peft_model.eval()


def detail(err: BaseException) -> str:
    """What a peft or torch error says, in one line: torch's load_state_dict opens with
    "Error(s) in loading state_dict for ...", its first real line comes after."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        return lines[1]
    return first_line(err)


def is_adapted(model: nn.Module) -> bool:
    """Whether `model` carries LoRA adapters (a PeftModel; none exists before peft is imported)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def in_float32(model: nn.Module) -> nn.Module:
    """A LoRA model to merge, in float32 if its base was kept lower (a hub base's bf16, see
    `build_causal_lm`): merged into bf16 weights, the adapters' float32 change mostly rounded
    away (0.005 of its 0.017 effect on a test model's logits). The export is then float32."""
    low = {p.dtype for p in model.parameters() if p.is_floating_point()} - {torch.float32}
    if not is_adapted(model) or not low:
        return model
    log.info("Merging the adapters in float32 (the base is %s)", ", ".join(map(str, low)))
    return model.float()


def merged(model: nn.Module) -> PreTrainedModel:
    """The plain HF model with the adapters added into its weights (peft's merge_and_unload)."""
    if not is_adapted(model):
        return model
    if tied := adapted_tied_layers(model):
        raise LMTrainError(
            f"the checkpoint's LoRA adapters are on {', '.join(tied)}, whose weight is shared "
            "by the input and output embeddings: merged, they would change both: export with "
            "merge=false (peft's adapter folder), which keeps the model as trained"
        )
    return model.merge_and_unload()


def base_folder(model: nn.Module) -> Path | None:
    """The local folder the base weights of a LoRA model are read from (None: no adapters, or
    a hub id): lmtrain's checkpoint or adapter folder needs it as it is."""
    if not is_adapted(model):
        return None
    saved = getattr(model, "lmtrain_lora", None)
    if isinstance(saved, Mapping):
        base = saved.get("base_model")
    else:
        base = model.peft_config[model.active_adapter].base_model_name_or_path
    path = Path(str(base or "")).expanduser()
    return path.resolve() if base and path.exists() else None
