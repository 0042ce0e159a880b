"""A tiny random GPT-2 and its byte-level BPE, as `save_pretrained` writes them: what a hub id such
as `gpt2` would load (`model.pretrained=<folder>`), small enough for a test and found without a
network."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

EOS = "<|endoftext|>"


def save_tiny_pretrained(
    folder: Path, texts: Iterable[str], n_layer: int = 2, vocab_size: int = 400
) -> Path:
    """Train a `vocab_size` byte-level BPE on `texts`, build a seeded random GPT-2 of `n_layer`
    layers (32 wide, 64 positions) for it, and save both into `folder`."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        n_layer=n_layer, n_head=2, n_embd=32, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
