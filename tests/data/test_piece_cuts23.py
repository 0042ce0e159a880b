"""Long documents without a newline between two non-space characters (paragraphs between blank
lines, indented code, pretty JSON) are cut where the tokenizer breaks tokens anyway, so the cache
holds the ids of each document encoded whole; those with no safe place are counted in one
warning. And Tiny Shakespeare from a folder leaves the cache inside it out as text_files does."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from lmtrain.data import TextDataModule
from lmtrain.data.piece_cuts import FALLBACK_CUTS, PIECE_CUT
from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import load_meta
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import build_tokenizer, split_at_eos
from tests.helpers.pretrained import tiny_bpe

BLOCK_CHARS = 64  # four blocks: 256 characters with no newline cut before a fallback is taken
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "words"]
FORCED = re.compile(r"(\d+) document\(s\) of .* so each was cut there")


def paragraphs(n: int, seed: int) -> str:
    """Paragraphs between blank lines: no newline has a non-space character on both sides."""
    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choices(WORDS, k=rng.randint(20, 60))) + "." for _ in range(n))


# Long documents that offer no newline cut: prose paragraphs, tab-indented code, pretty JSON,
# CJK paragraphs (no spaces at all), and spaces-only indentation with trailing whitespace.
DOCUMENTS = {
    "paragraphs.txt": paragraphs(40, 0),
    "code.py": "".join(f"def f{i}():\n\treturn [{i}, {i * 7}]\n\n" for i in range(150)),
    "pretty.json": json.dumps(
        [{"w": w, "n": i, "in": [w[:2]]} for i, w in enumerate(WORDS * 9)], indent=2
    ),
    "cjk.txt": "\n\n".join("日本語の文章です。次の行も続きます、数字42も。" * 6 for _ in range(30)),
    "trailing.txt": "".join(f"word{i}.  \n\n   x{i}  \t\n" for i in range(300)),
}
MINIFIED = {  # no whitespace at all: cut where it is, and counted
    "min1.json": ",".join(str(i * 7919 % 100003) for i in range(400)),
    "min2.json": ";".join(f"k{i}:{i}" for i in range(400)),
}


def write_corpus(folder: Path, documents: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in documents.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def assert_cache_holds_whole_ids(
    cache: Path, source: TextFilesSource, tokenizer: PreTrainedTokenizerBase, skip: set[str]
) -> None:
    """Each document's ids in the cache are those of its whole text, for every file not in
    `skip`; and there were several pieces per document, so the cuts were really tested."""
    encoded = {
        split: iter(split_at_eos(cache, split, tokenizer.eos_token_id))
        for split in ("train", "val")
    }
    files, _ = source.file_list()
    for path, split in zip(files, source.file_splits(), strict=True):
        ids = next(encoded[split])
        if path.name in skip:
            continue
        whole = tokenizer(path.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
        assert ids == whole, path.name
    pieces = [p for p in source.documents() if p.text and not p.end]
    assert len(pieces) > 40


@pytest.mark.parametrize("tokenizer_kind", ["bpe", "gpt2"])
@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_fallback_cut_keeps_the_whole_texts_tokens(name: str, tokenizer_kind: str) -> None:
    """At every place a cut rule matches, encoding the two sides apart gives the whole text's
    ids: for the corpus BPE (GPT-2's regex, runs bounded) and a pretrained GPT-2-style one."""
    texts = list(DOCUMENTS.values())
    if tokenizer_kind == "bpe":
        tokenizer = build_tokenizer("bpe", texts, vocab_size=500)
    else:
        tokenizer = tiny_bpe(texts, vocab_size=500)
    text = DOCUMENTS[name][:1500]

    def ids(part: str) -> list[int]:
        return tokenizer(part, add_special_tokens=False)["input_ids"]

    def pre_tokens(part: str) -> list[str]:
        pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
        return [token for token, _ in pre_tokenizer.pre_tokenize_str(part)]

    whole, whole_pre_tokens = ids(text), pre_tokens(text)
    cuts = [m.end() for p in (PIECE_CUT, *FALLBACK_CUTS) for m in p.finditer(text)]
    assert len(cuts) >= 10
    for cut in cuts:
        where = (name, text[cut - 10 : cut + 10])
        assert pre_tokens(text[:cut]) + pre_tokens(text[cut:]) == whole_pre_tokens, where
        assert ids(text[:cut]) + ids(text[cut:]) == whole, where


def test_a_cut_after_blank_lines_would_change_them() -> None:
    """Why no rule cuts just after whitespace that ends in a newline: GPT-2's regex leaves the
    last newline of `.\\n\\n` to a pre-token of its own; the left piece alone ends in `\\n\\n`."""
    text = DOCUMENTS["paragraphs.txt"]
    pre_tokenizer = build_tokenizer("bpe", [text], vocab_size=300).backend_tokenizer.pre_tokenizer
    cut = text.index("\n\n") + 2

    def pre_tokens(part: str) -> list[str]:
        return [token for token, _ in pre_tokenizer.pre_tokenize_str(part)]

    assert pre_tokens(text[:cut]) + pre_tokens(text[cut:]) != pre_tokens(text)
    cut -= 2  # just before the blank line: where WHITESPACE_CUT cuts
    assert pre_tokens(text[:cut]) + pre_tokens(text[cut:]) == pre_tokens(text)


def test_a_run_caches_whole_documents_and_counts_those_with_no_safe_cut(
    tmp_path: Path, data_dir: Path
) -> None:
    corpus = write_corpus(tmp_path / "corpus", {**DOCUMENTS, **MINIFIED})
    overrides = ["data.tokenizer.kind=bpe", f"+data.source.block_chars={BLOCK_CHARS}"]
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    assert out.returncode == 0, out.stderr[-3000:]
    output = out.stdout + out.stderr
    assert [m.group(1) for m in FORCED.finditer(output)] == ["2"], output[-3000:]
    source = TextFilesSource(str(corpus), block_chars=BLOCK_CHARS)
    cache = next(
        p.parent for p in data_dir.glob("cache/*/meta.json") if str(corpus) in p.read_text()
    )
    tokenizer = AutoTokenizer.from_pretrained(cache / "tokenizer")
    assert_cache_holds_whole_ids(cache, source, tokenizer, skip=set(MINIFIED))
    assert load_meta(cache)["documents"]["train"] + load_meta(cache)["documents"]["val"] == 7


def test_a_pretrained_tokenizers_cache_holds_whole_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus", DOCUMENTS)
    tiny_bpe(DOCUMENTS.values(), vocab_size=500).save_pretrained(tmp_path / "tok")
    source = TextFilesSource(str(corpus), val_fraction=0.3, block_chars=BLOCK_CHARS)
    tokenizer = {"kind": "pretrained", "name": str(tmp_path / "tok")}
    dm = TextDataModule(
        source, tokenizer, block_size=16, batch_size=4, cache_dir=str(tmp_path / "cache")
    )
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert not [r for r in caplog.records if "so each was cut there" in r.getMessage()]
    assert_cache_holds_whole_ids(dm.cache_path, source, dm.tokenizer, skip=set())


def test_shakespeare_from_a_folder_leaves_its_cache_out_as_text_files_does(
    tmp_path: Path, play: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "corp"
    corpus.mkdir()
    (corpus / "input.txt").write_bytes(play.read_bytes())
    for _ in range(2):  # the second finds the first's cache under the corpus folder
        source = ShakespeareSource(path=str(corpus), val_fraction=0.1)
        dm = TextDataModule(
            source, "char", block_size=16, batch_size=4, cache_dir=str(corpus / "cache")
        )
        caplog.clear()
        with caplog.at_level(logging.INFO):
            dm.prepare_data()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert not [m for level, m in messages if level >= logging.WARNING and "Left out" in m]
    assert [m for _, m in messages if m.startswith("Left ") and "data.cache_dir" in m], messages
    assert source.file_list()[0] == [corpus / "input.txt"]
