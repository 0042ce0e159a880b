"""The warning for documents cut where they were (no newline or space in four blocks) counts each
document once, a single text file included (its characters are counted in a first pass that must
not count its cuts), and is not given for the char tokenizer, whose ids a cut never changes."""

from __future__ import annotations

import base64
import random
import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lmtrain.data.token_cache import load_meta
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import split_at_eos

FORCED = re.compile(r"(\d+) document\(s\) of .* so each was cut there")


def base64_file(folder: Path) -> Path:
    """One file of base64 text: no whitespace at all, so every cut is a forced one."""
    folder.mkdir(parents=True)
    path = folder / "b64.txt"
    path.write_text(base64.b64encode(random.Random(0).randbytes(3000)).decode(), encoding="utf-8")
    return path


def train(tmp_path: Path, data_dir: Path, corpus: Path, *overrides: str) -> str:
    """A tiny run on `corpus` at 64-character blocks; its output, once it exited 0."""
    args = tiny_cli(tmp_path, data_dir, "+data.source.block_chars=64", *overrides, corpus=corpus)
    out = run_cli("train", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


def cache_of(data_dir: Path, corpus: Path, kind: str) -> Path:
    return next(
        p.parent
        for p in data_dir.glob("cache/*/meta.json")
        if str(corpus) in p.read_text() and f'"kind": "{kind}"' in p.read_text()
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_one_file_cut_where_it_is_is_counted_once(
    tmp_path: Path, data_dir: Path, workers: int
) -> None:
    """Read twice (characters, then pieces) and encoded by one or two processes: one document."""
    corpus = base64_file(tmp_path / "corpus")
    output = train(
        tmp_path,
        data_dir,
        corpus,
        "data.tokenizer.kind=bpe",
        f"data.prepare_workers={workers}",
        "data.prepare_chunk_mb=0.001",  # 4 chunks of ~1 kB: two workers really run
    )
    assert [m.group(1) for m in FORCED.finditer(output)] == ["1"], output[-3000:]
    meta = load_meta(cache_of(data_dir, corpus, "bpe"))
    assert meta["prepare"]["workers"] == workers


def test_the_char_tokenizer_is_not_warned_and_keeps_the_whole_texts_ids(
    tmp_path: Path, data_dir: Path
) -> None:
    """Every character is a token of its own: the cut pieces' ids are the whole text's, so the
    advice to raise block_chars would change nothing."""
    corpus = base64_file(tmp_path / "corpus")
    output = train(tmp_path, data_dir, corpus, "samples.prompts=[A]")  # base64 has no space
    assert "so each was cut there" not in output, output[-3000:]
    cache = cache_of(data_dir, corpus, "char")
    tokenizer = AutoTokenizer.from_pretrained(cache / "tokenizer")
    eos = tokenizer.eos_token_id
    cached = [ids for split in ("train", "val") for ids in split_at_eos(cache, split, eos)]
    whole = tokenizer(corpus.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    assert [i for ids in cached for i in ids] == whole
    assert len(cached) == 2  # nanoGPT's split of one file: a train and a val document
