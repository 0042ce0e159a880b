"""Refuse a module and a data module that do not fit each other, before the first batch.

`lmtrain.train` builds the module from its data module's tokenizer and checks the context against
`data.block_size` with config-key advice. From Python the two are built apart, and a mismatch
otherwise surfaces deep in torch: an IndexError in the embedding (token ids past the table, or
positions past the context) or, worse, training on, with the tokens read as other tokens.
Loaders handed to the trainer without their data module (`train_dataloaders=`, `dataloaders=`)
are checked by their first batch instead (`check_fits_batch`), once per loader and stage.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError
from lmtrain.models.hf import context_length

ADVICE = "build CausalLMModule(tokenizer=datamodule.tokenizer, ...) after datamodule.prepare_data()"


def check_fits_data(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None, datamodule: Any
) -> set[str]:
    """`datamodule`: the trainer's, if any; one without `block_size` or a tokenizer (not ours)
    is left alone. Return the loaders whose first batch `check_fits_batch` is to look at: all
    but a data module's with a `block_size` (checked here)."""
    block_size = getattr(datamodule, "block_size", None)
    unchecked = set() if isinstance(block_size, int) else {"train", "val"}
    limit = context_length(model.config)
    if isinstance(block_size, int) and limit is not None and block_size > limit:
        raise LMTrainError(
            f"the data module's block_size={block_size} is longer than the model's context "
            f"({limit}, its config's n_positions / max_position_embeddings): build the data "
            f"module with block_size <= {limit}, or the model with a longer context"
        )
    data_tokenizer = getattr(datamodule, "tokenizer", None)
    if not isinstance(data_tokenizer, PreTrainedTokenizerBase) or data_tokenizer is tokenizer:
        return unchecked
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
    return unchecked


def check_fits_batch(module: Any, batch: Any, loader: str) -> None:
    """The first batch of a `loader` ("train", "val") that `module.loaders_to_check` (set by
    `check_fits_data` when the trainer set up) names: windows longer than the model's context
    or token ids past its embedding table were an IndexError in torch. Once per loader and
    stage: `batch.max()` waits for the device."""
    unchecked = getattr(module, "loaders_to_check", None)
    if not unchecked or loader not in unchecked:
        return
    unchecked.discard(loader)
    if not isinstance(batch, torch.Tensor) or batch.ndim != 2 or batch.is_floating_point():
        return  # not windows of token ids: not a batch this module reads
    model = module.model
    limit = context_length(model.config)
    positions = batch.shape[1] - 1  # a window is block_size + 1 tokens
    if limit is not None and positions > limit:
        raise LMTrainError(
            f"the {loader} loader's windows are {batch.shape[1]} tokens (block_size="
            f"{positions}), longer than the model's context ({limit}, its config's n_positions "
            f"/ max_position_embeddings): build the loader's data module with block_size <= "
            f"{limit}, or the model with a longer context"
        )
    embeddings = model.get_input_embeddings().weight.shape[0]
    top = int(batch.max()) if batch.numel() else -1
    if top >= embeddings:
        raise LMTrainError(
            f"the {loader} loader's batch holds token id {top} but the model embeds only "
            f"{embeddings} tokens: {ADVICE}"
        )
