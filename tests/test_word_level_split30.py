"""A tokenizer of whole words without an unknown token, refused for what is really wrong.

One text file is split into train and val by characters (nanoGPT's convention), so the cut can
fall inside a word, and a word-level vocabulary has no token for either part. The refusal used to
blame every letter of the corpus (each fails alone under a word vocabulary) and quote the first
text of the batch; it now names the cut word, the tokenizer's own message and what to do
(red team data30, finding 1).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.coverage import UnencodableTextError, UnencodableWordsError, explain_failure
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "train",
    "model",
    "loss",
]
REASON = "WordLevel error: Missing [UNK] token from the vocabulary"


def word_lines(rng: random.Random, length: int, first: str = "", last: str = "") -> str:
    """Lines of 12 words from `WORDS`, `first` and `last` at the edges, padded with spaces to
    exactly `length` characters (the Whitespace pre-tokenizer drops them)."""
    lines = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(length // 80)]
    text = first + "\n".join(lines) + "\n"
    return text + " " * (length - len(text) - len(last)) + last


def word_corpus(path: Path) -> Path:
    """4,000 characters whose train/val cut at val_fraction=0.25 (character 3,000) falls inside
    'model': train ends with 'mod', val starts with 'el'."""
    rng = random.Random(0)
    text = word_lines(rng, 3000, last="gamma mod") + word_lines(rng, 1000, first="el loss ")
    assert len(text) == 4000 and text[2997:3002] == "model"
    path.write_text(text)
    return path


def word_tokenizer(corpus: Path, folder: Path) -> Path:
    """A WordLevel tokenizer with no unknown token, trained on every line of `corpus`, saved as a
    PreTrainedTokenizerFast folder."""
    tokenizer = Tokenizer(models.WordLevel(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[EOS]"])
    tokenizer.train_from_iterator(corpus.read_text().splitlines(), trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="[EOS]").save_pretrained(folder)
    return folder


def test_a_word_cut_at_the_train_val_split_is_named(tmp_path: Path) -> None:
    corpus = word_corpus(tmp_path / "corpus.txt")
    folder = word_tokenizer(corpus, tmp_path / "tok_word")
    # The tokenizer encodes the whole file: only the split's cut makes text it has no token for.
    assert len(AutoTokenizer.from_pretrained(folder)(corpus.read_text()).input_ids) > 500
    overrides = ["data.tokenizer.kind=pretrained", f"data.tokenizer.name={folder}", "logger=none"]
    overrides += ["data.source.val_fraction=0.25", "samples.prompts=[train]"]
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", *overrides, corpus=corpus))
    line = assert_one_line_error(
        result,
        "the corpus holds 'mod', the end of a piece of text and the start of the word 'model'",
        "gamma mod'",
        REASON,
        "split into train and val by characters, which can cut a word in two",
        "several files or a .jsonl file",
        "data.source.val_fraction",
        "a tokenizer with an unknown token",
    )
    assert "characters the tokenizer cannot encode" not in line, line
    assert not any((tmp_path / "data" / "cache").glob("*/train.bin"))


def test_the_text_that_fails_is_named_with_its_unknown_words() -> None:
    """A word tokenizer: the unknown word of the text that fails, not letters of the first text.
    A char tokenizer: still the characters, quoted where they are."""
    vocab = {word: i for i, word in enumerate(["the", "model", "loss", "."])}
    word = Tokenizer(models.WordLevel(vocab, unk_token=None))
    word.pre_tokenizer = pre_tokenizers.Whitespace()

    def encode_words(text: str) -> list[int]:
        return word.encode(text, add_special_tokens=False).ids

    texts = ["the model loss.\n", "the loss.\nthe zebra model.\n"]
    err = explain_failure(encode_words, texts, Exception(REASON))
    assert isinstance(err, UnencodableWordsError)
    assert str(err).startswith(
        "the corpus holds words the tokenizer cannot encode: 'zebra' (the first in "
        f"'the loss.\\nthe zebra model.\\n'; the tokenizer says: {REASON}): "
    ), err
    assert str(pickle.loads(pickle.dumps(err))) == str(err)  # crosses the worker pool whole

    chars = Tokenizer(models.WordLevel({c: i for i, c in enumerate("abc \n")}, unk_token=None))
    chars.pre_tokenizer = pre_tokenizers.Split("", "isolated")

    def encode_chars(text: str) -> list[int]:
        return chars.encode(text, add_special_tokens=False).ids

    err = explain_failure(encode_chars, ["abc cab\n", "ab Zc bca\n"], Exception(REASON))
    assert type(err) is UnencodableTextError
    assert err.characters == ["Z"] and err.context == "ab Zc bca\n", err
