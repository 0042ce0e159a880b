"""The keys `model.freeze` and `model.peft` take: here, below the model that reads them and the
config checks that name a misspelt one before any work (`lmtrain.utils.nested_keys`)."""

from __future__ import annotations

from typing import Any

# `model.freeze`: what CausalLMModule freezes (lmtrain.models.module_arguments).
FREEZE_KEYS = frozenset({"embeddings", "first_n_blocks"})
# `model.peft` (configs/model/peft/lora.yaml): LoRA's settings and their defaults
# (lmtrain.models.lora_settings).
LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": None}
