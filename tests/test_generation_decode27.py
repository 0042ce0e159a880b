"""Generated text is what plain transformers decodes for the whole row, whatever the tokenizer,
and an empty prompt on a tokenizer with no eos starts from bos or is refused in one line (red
team gen27, findings 1 and 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from lmtrain.data.tokenizers import char_tokenizer
from lmtrain.models.generation import generate_text
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.corpora import SENTENCE_WORDS
from tests.helpers.pretrained import tiny_bpe

TEXTS = [SENTENCE_WORDS] * 20
PROMPTS = ["the", "the quick brown", "fox", "lazy dog", "a small bird", "on"]
NEW = 8


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A BPE with a Metaspace pre-tokenizer and decoder: how Llama-2, Mistral and TinyLlama
    tokenizers (SentencePiece) write a word's leading space, as a `▁` on its first token."""
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    bpe.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    bpe.train_from_iterator(TEXTS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def tiny_llama(tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(tokenizer: PreTrainedTokenizerBase) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=1, n_head=2, n_embd=16, n_positions=64,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


def plain(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """The row plain greedy `model.generate` gives for `ids`."""
    tensor = torch.tensor([ids])
    out = model.generate(
        tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=NEW, do_sample=False,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    return out[0].tolist()


def greedy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    (text,) = generate_text(
        model, tokenizer, prompt, max_new_tokens=NEW, greedy=True, stop_at_eos=True
    )
    return text


def test_metaspace_text_keeps_the_space_before_the_first_new_word() -> None:
    """The new tokens decoded alone lost the `▁` of the first: "the" + "▁words" printed
    "thewords" where transformers decodes "the words"."""
    tokenizer = metaspace_tokenizer()
    model = tiny_llama(tokenizer)
    spaced = 0
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        row = plain(model, tokenizer, ids)
        spaced += tokenizer.convert_ids_to_tokens(row[len(ids)]).startswith("▁")
        assert greedy(model, tokenizer, prompt) == tokenizer.decode(row, skip_special_tokens=True)
    assert spaced  # the case the bug was in: a first new token that starts a word


@pytest.mark.parametrize("kind", ["metaspace", "byte-level", "char"])
def test_text_equals_the_whole_row_decoded(kind: str) -> None:
    """For every tokenizer kind, with and without the eos shown, and for the empty prompt (a
    new document: the start token is not text), the text is the prompt as typed followed by
    what transformers decodes past it."""
    if kind == "metaspace":
        tokenizer: PreTrainedTokenizerBase = metaspace_tokenizer()
        model: PreTrainedModel = tiny_llama(tokenizer)
    else:
        tokenizer = tiny_bpe(TEXTS, 300) if kind == "byte-level" else char_tokenizer(TEXTS)
        model = tiny_gpt2(tokenizer)
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        whole = tokenizer.decode(plain(model, tokenizer, ids), skip_special_tokens=True)
        assert whole.startswith(prompt)
        assert greedy(model, tokenizer, prompt) == whole
    row = plain(model, tokenizer, [tokenizer.eos_token_id])
    assert greedy(model, tokenizer, "") == tokenizer.decode(row[1:], skip_special_tokens=True)
    (shown,) = generate_text(model, tokenizer, "the", max_new_tokens=NEW, greedy=True)
    row = model.generate(
        torch.tensor([tokenizer("the", add_special_tokens=False).input_ids]),
        max_new_tokens=NEW, do_sample=False, eos_token_id=None,
        pad_token_id=tokenizer.eos_token_id,
    )[0].tolist()  # fmt: skip
    assert shown == tokenizer.decode(row)


def save_folder(folder: Path, bos: str | None) -> Path:
    """A char tokenizer with no eos (and `bos` as its bos, if any) and a tiny GPT-2, saved with
    `save_pretrained`: a plain folder lmtrain.generate takes."""
    fast = char_tokenizer(TEXTS)
    backend = Tokenizer.from_str(fast.backend_tokenizer.to_str())
    if bos is not None:
        backend.add_special_tokens([bos])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos)
    assert tokenizer.eos_token_id is None
    tiny_gpt2(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_empty_prompt_without_eos_or_bos_is_one_line(tmp_path: Path) -> None:
    """`prompt=""` (the default) on a folder whose tokenizer has no eos and no bos ended in
    `RuntimeError: Could not infer dtype of NoneType`."""
    folder = save_folder(tmp_path / "noeos", bos=None)
    result = run_cli(
        "generate", f"ckpt_path={folder}", f"paths.root_dir={tmp_path / 'g'}", "max_new_tokens=4"
    )
    assert_one_line_error(result, "prompt=''", "no eos or bos token", "pass a non-empty prompt")
    ok = run_cli(
        "generate",
        f"ckpt_path={folder}",
        f"paths.root_dir={tmp_path / 'g'}",
        "prompt=the",
        "max_new_tokens=4",
    )
    assert ok.returncode == 0 and ok.stdout.startswith("the"), ok.stderr[-3000:]


def test_empty_prompt_without_eos_starts_from_bos(tmp_path: Path) -> None:
    """With no eos, a new document starts from bos, as transformers' `generate` with no input
    does."""
    folder = save_folder(tmp_path / "bos", bos="<s>")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    model = GPT2LMHeadModel.from_pretrained(folder).eval()
    result = run_cli(
        "generate",
        f"ckpt_path={folder}",
        f"paths.root_dir={tmp_path / 'g'}",
        "greedy=true",
        f"max_new_tokens={NEW}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = model.generate(max_new_tokens=NEW, do_sample=False, pad_token_id=None)[0].tolist()
    assert out[0] == tokenizer.bos_token_id
    assert result.stdout == tokenizer.decode(out[1:], skip_special_tokens=True) + "\n"
