"""Corpus inputs that trained on garbage or ended in a traceback: binary files and UTF-16 text
without a byte order mark (NUL bytes, valid UTF-8), a tokenizer sample below one byte, a file name
that is not UTF-8, a `data=hf_dataset` glob that matches nothing, and a bare "bpe" kind from
Python."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from lmtrain.data import token_cache
from lmtrain.data.corpus import file_hash
from lmtrain.data.datamodule import TextDataModule
from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.tokenizers import TokenizerSettings, check_tokenizer_config
from lmtrain.errors import MissingCorpusError
from lmtrain.utils.checks import Problems
from tests.helpers import ROOT
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import load_splits, write_corpus

CHAR = {"kind": "char", "vocab_size": None, "name": None}
NUL_PROBLEM = "holds a NUL byte"
NUL_WHAT = "binary data, or UTF-16/UTF-32 text without a byte order mark, not UTF-8 text"
NOTE = "hello world, a note\n"


def write_token_ids(path: Path) -> Path:
    """What a tokenizer script leaves beside its text: uint16 token ids (valid UTF-8 bytes)."""
    np.array([5, 12, 40, 33] * 2000, dtype=np.uint16).tofile(path)
    return path


def write_utf16(path: Path, repeat: int = 100) -> Path:
    """UTF-16 text without a byte order mark, as Windows tools or `encode('utf-16-le')` write."""
    data = (NOTE * repeat).encode("utf-16-le")
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def prepared(source: object, cache_dir: Path, tokenizer: object = CHAR) -> TextDataModule:
    dm = TextDataModule(source, tokenizer, 16, 2, cache_dir=str(cache_dir), prepare_workers=1)
    dm.prepare_data()
    dm.setup()
    return dm


# -- binary data and UTF-16 without a byte order mark -------------------------------------------


@pytest.mark.parametrize(
    ("name", "write", "advice"),
    [
        ("train.bin", write_token_ids, "else remove it or narrow data.source.path"),
        (
            "notes.txt",
            write_utf16,
            "`iconv -f utf-16le -t utf-8 {d}/notes.txt > {d}/notes.utf8.txt`",
        ),
    ],
    ids=["token-ids", "utf16-no-bom"],
)
def test_a_binary_or_utf16_file_in_a_corpus_folder_is_refused(
    tmp_path: Path, name: str, write: object, advice: str
) -> None:
    """A token-id `train.bin` or a BOM-less UTF-16 `notes.txt` beside the text trained as text
    (the char vocabulary held '\\x00'), exit 0: NUL bytes are valid UTF-8."""
    corpus = write_corpus(tmp_path / "docs", n_docs=3)
    write(corpus / name)  # type: ignore[operator]
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    assert_one_line_error(
        result,
        f"'{corpus / name}' {NUL_PROBLEM} at byte 1: it is {NUL_WHAT}",
        advice.format(d=corpus),
    )
    assert_no_cache_left(tmp_path / "data" / "cache")


def test_a_nul_past_the_first_bytes_or_inside_gzip_is_refused(tmp_path: Path) -> None:
    """The start of a file is searched before reading; a NUL further on (text, then binary data
    appended) is refused where the text is read, with its byte offset; a .gz is searched
    gunzipped, and its conversion goes through zcat."""
    late = tmp_path / "late" / "notes.txt"
    late.parent.mkdir()
    late.write_bytes(b"plain text\n" * 2000 + b"\x00\x01\x02 more")
    message = refusal(lambda: load_splits(TextFilesSource(str(late))))
    assert message.startswith(f"'{late}' {NUL_PROBLEM} at byte 22000: it is {NUL_WHAT}"), message

    folder = write_corpus(tmp_path / "packed", n_docs=2)
    packed = write_utf16(folder / "notes.txt.gz", repeat=10)
    message = refusal(lambda: prepared(TextFilesSource(str(folder)), tmp_path / "cache"))
    assert f"'{packed}' {NUL_PROBLEM} at byte 1" in message, message
    assert (
        f"`zcat {packed} | iconv -f utf-16le -t utf-8 | gzip > {folder}/notes.utf8.txt.gz`"
        in message
    )
    assert_no_cache_left(tmp_path / "cache")


# -- data.tokenizer.train_sample_mb below one byte ----------------------------------------------


def test_a_tokenizer_sample_below_one_byte_is_refused(tmp_path: Path) -> None:
    """1e-7 MB is 0.1 byte: `int(MB * value)` read 0 bytes, a ZeroDivisionError in `sample`."""
    corpus = write_corpus(tmp_path / "docs", n_docs=3)
    result = run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            tmp_path / "data",
            "data.tokenizer.kind=bpe",
            "data.tokenizer.vocab_size=300",
            "data.tokenizer.train_sample_mb=1e-7",
            corpus=corpus,
        ),
    )
    line = assert_one_line_error(result)
    assert line == (
        "error: data.tokenizer.train_sample_mb=1e-07 is below one byte: pass e.g. 256, or null "
        "for all the text"
    )
    assert_no_cache_left(tmp_path / "data" / "cache")
    for ok in (1e-6, 0.5, 256, None):  # one byte is a sample; null is all of the text
        problems = Problems()
        check_tokenizer_config({"kind": "bpe", "vocab_size": 300, "train_sample_mb": ok}, problems)
        problems.raise_if_any()


# -- a file name that is not UTF-8 --------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_trains(tmp_path: Path) -> None:
    """`caf\\xe9.txt` (latin-1 bytes in its name) was a UnicodeEncodeError traceback where its
    split was hashed; valid names hash as before, so no file changes split."""
    corpus = write_corpus(tmp_path / "docs", n_docs=3)
    odd = os.fsencode(corpus) + b"/caf\xe9.txt"
    with open(odd, "w", encoding="utf-8") as f:
        f.write("text of a file whose name is latin-1\n" * 50)
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    (cache,) = [p for p in (tmp_path / "data" / "cache").iterdir() if p.is_dir()]
    assert sum(token_cache.load_meta(cache)["documents"].values()) == 4  # every file is read
    for name in ("doc0.txt", "café.txt", "日本語/x.md"):
        assert file_hash(name) == zlib.crc32(name.encode("utf-8")) % 10_000
    assert file_hash(os.fsdecode(b"caf\xe9.txt")) == zlib.crc32(b"caf\xe9.txt") % 10_000


# -- data=hf_dataset: a glob that matches nothing -----------------------------------------------


@pytest.mark.parametrize("suffix", ["txt", "parquet", "jsonl"])
def test_an_hf_dataset_glob_that_matches_nothing_is_refused(tmp_path: Path, suffix: str) -> None:
    """A DatasetGenerationError or ValueError traceback, or (*.jsonl) "holds no rows" as if an
    empty file were there; text_files says "matches no file", as the docs promise for both."""
    path = str(tmp_path / "nothere" / f"*.{suffix}")
    source = HFDatasetSource(path, cache_dir=str(tmp_path / "hf"))
    with pytest.raises(MissingCorpusError) as caught:
        prepared(source, tmp_path / "cache")
    assert str(caught.value) == (
        f"data.source.path={path!r} matches no file: pass an existing file, folder or glob"
    )
    assert caught.value.path == path
    assert_no_cache_left(tmp_path / "cache")


def test_an_hf_dataset_glob_that_matches_nothing_is_one_line_from_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "nothere" / "*.txt"
    result = run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            tmp_path / "data",
            "data=hf_dataset",
            f"data.source.path='{path}'",
            f"data.source.cache_dir={tmp_path / 'hf'}",
        ),
    )
    assert_one_line_error(result, f"data.source.path='{path}' matches no file")
    assert_no_cache_left(tmp_path / "data" / "cache")


# -- a tokenizer kind alone, from Python --------------------------------------------------------


def test_a_bare_bpe_kind_gets_the_configs_bpe_settings(tmp_path: Path) -> None:
    """docs/python.md: `tokenizer` is a kind ("char", "bpe"); "bpe" was refused with
    "data.tokenizer.vocab_size=None is not a whole number". It stands for
    `data.tokenizer.kind=bpe` with configs/data/_base.yaml's vocab_size and train_sample_mb."""
    corpus = write_corpus(tmp_path / "docs", n_docs=3)
    base = yaml.safe_load((ROOT / "configs" / "data" / "_base.yaml").read_text())["tokenizer"]
    dm = TextDataModule(source=str(corpus), tokenizer="bpe", block_size=32, batch_size=4,
                        cache_dir=str(tmp_path / "cache"), prepare_workers=1)  # fmt: skip
    assert dm.tokenizer_settings == TokenizerSettings.from_config({**base, "kind": "bpe"})
    assert dm.tokenizer_settings.vocab_size == base["vocab_size"] > 256
    dm.prepare_data()
    dm.setup()
    assert len(dm.tokenizer) > 256  # byte-level: every byte, learned merges, end-of-text
    # A bare "char" still builds the cache {"kind": "char"} builds.
    char = [prepared(str(corpus), tmp_path / "cache", kind) for kind in ("char", CHAR)]
    assert char[0].cache_path == char[1].cache_path
