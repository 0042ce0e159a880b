"""The special-token ids a model config names must be tokens of its vocabulary.

Why: a fresh model takes its end-of-text id from the tokenizer unless the config names one, and
an id copied from another model (GPT-2's `eos_token_id: 50256` into a 30-character vocabulary)
trained without a word, went into the export's config.json, and only made transformers warn
when the export was loaded; generation would stop on a token the model can never produce."""

from __future__ import annotations

from transformers import PretrainedConfig

from lmtrain.errors import LMTrainError

TOKEN_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def refuse_token_ids_outside_vocabulary(hf_config: PretrainedConfig, given: dict) -> None:
    """Refuse an id set in `given` (model.config) that is no token of the built vocabulary."""
    size = getattr(hf_config, "vocab_size", None)  # a config of no LM: refused after this
    if not isinstance(size, int):
        return
    for key in TOKEN_ID_KEYS:
        value = given.get(key)
        ids = value if isinstance(value, list | tuple) else [value]
        if any(isinstance(i, int) and not 0 <= i < size for i in ids):
            raise LMTrainError(
                f"model.config.{key}={value} is outside the vocabulary of {size} tokens "
                f"(ids 0 to {size - 1}): leave it unset (the tokenizer's ids are used) "
                f"or pass an id below {size}"
            )
