"""Tokenizers: exact round-trips, an eos token, and identical ids after save and reload."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.tokenizers import EOS_TOKEN, check_tokenizer_config
from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems
from tests.helpers.corpora import build_tokenizer

TRAIN_DOCS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n\tx: int = 0\n\ty: int = 0\n",
    "Café, naïve, 日本語 and emoji 🙂\r\n\n\n   three spaces\n",
] * 20
TRICKY = "  two leading spaces\n\n\ttab\r\nCafé 日本語 🙂   x\n"


def assert_round_trips(tokenizer: PreTrainedTokenizerFast, text: str) -> None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_char_tokenizer_is_one_token_per_character_and_round_trips() -> None:
    tokenizer = build_tokenizer("char", TRAIN_DOCS, val_docs=[TRICKY, "Ωmega"])
    alphabet = sorted(set("".join([*TRAIN_DOCS, TRICKY, "Ωmega"])))
    assert len(tokenizer) == len(alphabet) + 1
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.eos_token_id == len(alphabet)
    assert tokenizer.convert_ids_to_tokens(list(range(len(alphabet)))) == alphabet
    assert len(tokenizer(TRICKY, add_special_tokens=False)["input_ids"]) == len(TRICKY)
    assert_round_trips(tokenizer, TRICKY)
    assert_round_trips(tokenizer, "Ωmega")


def test_a_bpe_vocab_size_the_corpus_cannot_reach_is_warned_of(caplog) -> None:
    """vocab_size=100000 on a small corpus built 300-odd tokens, said only in an INFO line."""
    with caplog.at_level(logging.WARNING, logger="lmtrain.data.tokenizers"):
        tokenizer = build_tokenizer("bpe", TRAIN_DOCS, vocab_size=100_000)
    assert len(tokenizer) < 1000
    assert (
        f"The BPE learned {len(tokenizer)} tokens, short of data.tokenizer.vocab_size=100000"
    ) in caplog.text


def test_bpe_tokenizer_round_trips_any_text() -> None:
    tokenizer = build_tokenizer("bpe", TRAIN_DOCS, vocab_size=300)
    assert 257 <= len(tokenizer) <= 300 and tokenizer.eos_token == EOS_TOKEN
    assert_round_trips(tokenizer, TRICKY)
    assert_round_trips(tokenizer, "text never seen: ß∂ƒ©˙∆ \x00\x7f")
    ids = tokenizer("def add", add_special_tokens=False)["input_ids"]
    assert len(ids) < len("def add")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_and_reload_gives_identical_ids(tmp_path: Path, kind: str) -> None:
    tokenizer = build_tokenizer(kind, TRAIN_DOCS, vocab_size=300, val_docs=[TRICKY])
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    text = TRICKY + EOS_TOKEN + TRAIN_DOCS[0]
    assert reloaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reloaded.eos_token_id == tokenizer.eos_token_id
    assert_round_trips(reloaded, TRAIN_DOCS[2])


def test_pretrained_tokenizer_loads_from_a_local_folder(tmp_path: Path) -> None:
    build_tokenizer("bpe", TRAIN_DOCS, vocab_size=300).save_pretrained(tmp_path)
    tokenizer = build_tokenizer("pretrained", [], name=str(tmp_path))
    assert isinstance(tokenizer, PreTrainedTokenizerFast) and tokenizer.eos_token == EOS_TOKEN
    assert_round_trips(tokenizer, TRICKY)


def test_pretrained_tokenizer_errors_name_the_setting(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "such" / "folder")
    with pytest.raises(LMTrainError, match=r"data\.tokenizer\.name=") as err:
        build_tokenizer("pretrained", [], name=missing)
    assert missing in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(LMTrainError, match=r"data\.tokenizer\.name=None"):
        build_tokenizer("pretrained", [])


def test_a_pretrained_tokenizer_with_gaps_in_its_ids_is_one_line(tmp_path: Path) -> None:
    """28 tokens, the end-of-text at id 70000: the cache's uint16 overflowed in a traceback (at
    id 1000 the cache failed its own check and was rebuilt on every run; red team rev_tok)."""
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz ")} | {EOS_TOKEN: 70000}
    word = Tokenizer(models.WordLevel(vocab, unk_token=" "))
    word.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    PreTrainedTokenizerFast(tokenizer_object=word, eos_token=EOS_TOKEN).save_pretrained(tmp_path)
    with pytest.raises(LMTrainError) as err:
        build_tokenizer("pretrained", [], name=str(tmp_path))
    assert str(err.value).startswith(
        f"data.tokenizer.name={str(tmp_path)!r} has 28 tokens but ids up to 70000 (gaps in its ids)"
    )


def check(tokenizer: dict) -> None:
    problems = Problems()
    check_tokenizer_config(tokenizer, problems)
    problems.raise_if_any()


def test_bad_kind_and_vocab_size_are_one_line_errors() -> None:
    with pytest.raises(LMTrainError, match="kind='wordpiece' is unknown: use one of char, bpe"):
        check({"kind": "wordpiece"})
    with pytest.raises(LMTrainError, match="vocab_size=100 must be at least 257"):
        check({"kind": "bpe", "vocab_size": 100})
    with pytest.raises(LMTrainError, match="vocab_size=100 is too small"):
        build_tokenizer("bpe", TRAIN_DOCS, vocab_size=100)
    # Every problem at once, in one line.
    with pytest.raises(LMTrainError, match=r"^2 settings need a change: \(1\) .*vocab_size.*\(2\)"):
        check({"kind": "bpe", "vocab_size": "many", "train_sample_mb": -1})
