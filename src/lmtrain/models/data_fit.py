"""Refuse a module and a data module that do not fit each other, before the first batch.

`lmtrain.train` builds the module from its data module's tokenizer and checks the context against
`data.block_size` with config-key advice. From Python the two are built apart, and a mismatch
otherwise surfaces deep in torch: an IndexError in the embedding (token ids past the table, or
positions past the context) or, worse, training on, with the tokens read as other tokens.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.hf import context_length

ADVICE = "build CausalLMModule(tokenizer=datamodule.tokenizer, ...) after datamodule.prepare_data()"


def check_fits_data(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, datamodule: Any
) -> None:
    """`datamodule`: the trainer's, if any; one without `block_size` or a tokenizer (not ours)
    is left alone."""
    block_size = getattr(datamodule, "block_size", None)
    limit = context_length(model.config)
    if isinstance(block_size, int) and limit is not None and block_size > limit:
        raise LMTrainError(
            f"the data module's block_size={block_size} is longer than the model's context "
            f"({limit}, its config's n_positions / max_position_embeddings): build the data "
            f"module with block_size <= {limit}, or the model with a longer context"
        )
    data_tokenizer = getattr(datamodule, "tokenizer", None)
    if not isinstance(data_tokenizer, PreTrainedTokenizerBase) or data_tokenizer is tokenizer:
        return
    embeddings = model.get_input_embeddings().weight.shape[0]
    if len(data_tokenizer) > embeddings:
        raise LMTrainError(
            f"the data module's tokenizer has {len(data_tokenizer)} tokens but the model embeds "
            f"only {embeddings}: {ADVICE}"
        )
    if tokenizer is None and embeddings != len(data_tokenizer):
        rank_zero_warn(
            f"the module was built without a tokenizer: it embeds {embeddings} tokens (its "
            f"config's vocabulary), the data module's tokenizer has {len(data_tokenizer)}, and "
            f"val/bpb is not measured; {ADVICE}"
        )
    if tokenizer is not None and tokenizer.get_vocab() != data_tokenizer.get_vocab():
        raise LMTrainError(
            f"the module was built with another tokenizer ({len(tokenizer)} tokens) than the "
            f"data module's ({len(data_tokenizer)} tokens): its samples and bits per byte would "
            f"read the ids as other tokens; {ADVICE}"
        )
