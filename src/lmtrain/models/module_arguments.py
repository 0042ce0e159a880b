"""Checks of `CausalLMModule`'s arguments that no config check covers when it is built from
Python (`lmtrain.train` checks the config first; see `lmtrain.utils.config_checks`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.utils.optimizer_checks import check_factories

FREEZE_KEYS = {"embeddings", "first_n_blocks"}


def check_module_arguments(
    tokenizer: Any, freeze: Mapping[str, Any] | None, optimizer: Any, scheduler: Any, parts: bool
) -> dict[str, Any]:
    """Refuse a tokenizer that is not one, unknown `freeze` keys, and an optimizer or schedule
    that cannot be called as the module calls them (`parts`: `optimizer` is OptimizerParts,
    checked by its own split); return `freeze` as a dict."""
    if tokenizer is not None and not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise LMTrainError(
            f"tokenizer={tokenizer!r:.40} is not a tokenizer: pass datamodule.tokenizer (after "
            "datamodule.prepare_data()) or a transformers tokenizer"
        )
    freeze = dict(freeze or {})
    unknown = sorted(set(freeze) - FREEZE_KEYS)
    if unknown:
        raise LMTrainError(
            f"model.freeze has unknown keys {unknown}: use embeddings and first_n_blocks"
        )
    check_factories(None if parts else optimizer, scheduler)
    return freeze


def refuse_pickle(weights_only: bool) -> None:
    """`load_from_checkpoint` reads weights-only, whatever it is asked: files are untrusted."""
    if not weights_only:
        raise LMTrainError(
            "lmtrain reads checkpoints weights-only: leave out weights_only (it was turned off)"
        )
