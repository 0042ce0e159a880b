"""Long runs of one character (or of any letters, digits or spaces) in a corpus: BPE's pre-tokens
stay short, so training and encoding stay linear, and decoding still gives the text back.

Before the pre-tokens were bounded, a run was one pre-token and the trainer's time grew with its
square: 0.1 MB of "a" trained in 11 s, 0.5 MB in 300 s. Each timed test first checks the bound,
so that without it the test fails at once instead of training for half an hour.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from tokenizers import pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.tokenizers import MAX_PRETOKEN_CHARS, TokenizerSettings
from tests.helpers.corpora import DOCS, build_tokenizer

RUNS = {
    "letter": "a" * 1000,
    "two letters": "ab" * 500,
    "spaces": " " * 1000 + "x",
    "newlines": "\n" * 1000,
    "digits": "7" * 1000,
    "dashes": "-" * 1000,
    "CJK": "日" * 300,
    "emoji": "🙂" * 300,
    "base64": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" * 30,
}


def longest_pretoken(tokenizer: PreTrainedTokenizerFast, text: str) -> int:
    """Characters in the longest pre-token of `text` (after the byte mapping: bytes)."""
    return max(
        len(piece) for piece, _ in tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
    )


def bpe_settings(vocab_size: int = 8192) -> TokenizerSettings:
    return TokenizerSettings.from_config({"kind": "bpe", "vocab_size": vocab_size})


@pytest.mark.parametrize("run", RUNS.values(), ids=RUNS.keys())
def test_a_long_run_becomes_short_pretokens_and_round_trips(run: str) -> None:
    tokenizer = build_tokenizer("bpe", [*DOCS[:10], run], vocab_size=400)
    text = f"before {run} after\n"
    # Bounded: MAX_PRETOKEN_CHARS characters and a leading space, up to 4 bytes a character.
    assert longest_pretoken(tokenizer, text) <= 4 * MAX_PRETOKEN_CHARS + 1
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_text_without_long_runs_is_split_as_gpt2_splits_it() -> None:
    """The bound changes nothing below it: the same pre-tokens as GPT-2's ByteLevel regex."""
    tokenizer = build_tokenizer("bpe", DOCS[:10], vocab_size=300)
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False)
    for text in [*DOCS, "it's 'll've  \t\r\n x1234 ... ?!" + "y" * MAX_PRETOKEN_CHARS]:
        ours = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)
        assert ours == gpt2.pre_tokenize_str(text)


@pytest.mark.parametrize(("character", "megabytes"), [("a", 1), ("\n", 5)])
def test_megabytes_of_one_character_train_in_seconds(
    tmp_path: Path, character: str, megabytes: int
) -> None:
    """Through the real source: 1 MB of "a" took more than 20 minutes to train before; 5 MB of
    newlines also took 10 s to be cut into pieces (a Python step per newline, now a regex)."""
    corpus = tmp_path / "run.txt"
    corpus.write_text(character * (megabytes * 1_000_000))
    settings = bpe_settings()
    assert longest_pretoken(settings.build(["x"]), character * 1000) <= MAX_PRETOKEN_CHARS
    # CPU seconds of this process (all its threads): tests running beside it do not count.
    start = time.process_time()
    tokenizer = settings.build(settings.training_text(TextFilesSource(str(corpus))))
    elapsed = time.process_time() - start
    assert elapsed < 8, f"{megabytes} MB of {character!r} took {elapsed:.1f} CPU s to train"
    text = corpus.read_text()[:100_000]
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
