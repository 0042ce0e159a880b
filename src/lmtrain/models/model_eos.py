"""A model's own tokenizer must define an eos token before eval reads a corpus with it.

The token cache separates documents with the eos token, so `lmtrain.data.pretrained_tokenizer`
refuses a `data.tokenizer` without one. eval reads its val split with the model's tokenizer,
saved into its run folder, and that refusal then named the saved copy under
`data.tokenizer.name`: a key and a folder the user never typed, and advice ("pick a tokenizer")
eval does not let them follow. This check runs on the loaded model instead, names the
`ckpt_path` the user gave, and says how to give that folder's tokenizer an eos token.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from lmtrain.errors import LMTrainError


def refuse_without_eos(tokenizer: PreTrainedTokenizerBase, ckpt_path: str) -> None:
    """Refuse, in one line naming `ckpt_path`, a model whose tokenizer has no eos token."""
    if tokenizer.eos_token is not None:
        return
    raise LMTrainError(
        f"ckpt_path={ckpt_path!r} has a tokenizer with no eos token, which eval needs to "
        "separate the val split's documents: give that folder's tokenizer one "
        "(tokenizer.add_special_tokens({'eos_token': '<|endoftext|>'}), "
        "model.resize_token_embeddings(len(tokenizer)), then save_pretrained both into it), "
        "or evaluate a model trained with a tokenizer that has one"
    )
