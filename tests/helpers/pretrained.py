"""A tiny random GPT-2 (or Llama) and its byte-level BPE, as `save_pretrained` writes them: what a
hub id such as `gpt2` would load (`model.pretrained=<folder>`), small enough for a test and found
without a network."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from tests.helpers.corpora import write_corpus

EOS = "<|endoftext|>"


def save_tiny_pretrained(
    folder: Path,
    texts: Iterable[str],
    n_layer: int = 2,
    vocab_size: int = 400,
    n_embd: int = 32,
    seed: int = 0,
) -> Path:
    """Train a `vocab_size` byte-level BPE on `texts`, build a random GPT-2 of `n_layer` layers
    (`n_embd` wide, 64 positions) from `seed` for it, and save both into `folder`."""
    tokenizer = tiny_bpe(texts, vocab_size)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        n_layer=n_layer, n_head=2, n_embd=n_embd, n_positions=64, vocab_size=len(tokenizer),
        bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_llama(
    folder: Path, texts: Iterable[str], vocab_size: int = 400, tied: bool = True
) -> Path:
    """As `save_tiny_pretrained`, a seeded random Llama (2 layers, 32 wide, grouped-query
    attention, embeddings tied to the head unless `tied=False`) and its byte-level BPE."""
    tokenizer = tiny_bpe(texts, vocab_size)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
        intermediate_size=64, max_position_embeddings=64, vocab_size=len(tokenizer),
        tie_word_embeddings=tied, bos_token_id=eos, eos_token_id=eos,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A `vocab_size` byte-level BPE trained on `texts`, with `EOS` as its only special token."""
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
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, bos_token=EOS)


def pretrained_base(tmp_path_factory: Any, n_embd: int = 32) -> Path:
    """A tiny random GPT-2 (2 layers, `n_embd` wide) and its BPE trained on a corpus of its own:
    the base model a fine-tuning test starts from."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    texts = [p.read_text() for p in write_corpus(folder.parent / "pretrain", seed=5).iterdir()]
    return save_tiny_pretrained(folder, texts, n_embd=n_embd)


def new_text(tmp_path_factory: Any) -> Path:
    """The text a fine-tuning test trains on: another corpus than the base model's."""
    return write_corpus(tmp_path_factory.mktemp("new-text") / "docs", seed=9)
