"""Corpus files that a reader refuses: one line naming the file (and the line, where known),
whichever source reads them and whenever they are read: while a tokenizer trains (the Rust trainer
pulls the documents), while the corpus is encoded (the parent reads, forked workers encode).
No token cache folder may be left behind. Not UTF-8, unreadable files, and plain JSON syntax
errors in a .jsonl file read by data=text_files are tests/data/test_bad_files.py's and
tests/data/test_sources.py's.
"""

from __future__ import annotations

import gzip
import json
import random
import tarfile
from pathlib import Path

import pytest

from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.sources import TextFilesSource, assign_splits
from lmtrain.data.token_cache import build_or_load
from lmtrain.data.tokenizers import TokenizerSettings
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import build_tokenizer, load_splits, write_corpus

CHAR = TokenizerSettings.from_config({"kind": "char"})


def records(n: int, seed: int = 0) -> bytes:
    """`n` JSON lines of random words: text that gzip cannot shrink to a few bytes."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "fox", "dog", "river", "tree"]
    docs = (" ".join(rng.choice(words) for _ in range(12)) for _ in range(n))
    return "".join(json.dumps({"text": doc}) + "\n" for doc in docs).encode()


def damaged(data: bytes) -> bytes:
    """gzip data with 64 bytes in its middle zeroed: inflating it fails or its CRC does."""
    packed = bytearray(gzip.compress(data))
    middle = len(packed) // 2
    packed[middle : middle + 64] = bytes(64)
    return bytes(packed)


# name -> (file bytes, what the message says): a .gz file cut short, one that is not gzip, one
# whose compressed stream is damaged; as plain text and as JSON lines.
GZIP_FILES = {
    "cut.txt.gz": (gzip.compress(records(3000))[:-300], "ends before the end of its gzip stream"),
    "cut.jsonl.gz": (gzip.compress(records(3000))[:-300], "ends at line "),
    "plain.txt.gz": (b"plain text, never compressed\n" * 10, "is not gzip data"),
    "plain.jsonl.gz": (records(10), "is not gzip data"),
    "damaged.txt.gz": (damaged(records(3000)), "is damaged gzip data"),
}


@pytest.mark.parametrize("name", GZIP_FILES)
def test_a_bad_gz_file_among_good_files_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    data, says = GZIP_FILES[name]
    (corpus / name).write_bytes(data)
    cache = tmp_path / "cache"
    message = refusal(lambda: build_or_load(cache, TextFilesSource(str(corpus)), CHAR, workers=1))
    assert f"'{corpus / name}'" in message and says in message, message
    assert "data.source.path" in message
    assert_no_cache_left(cache)


@pytest.mark.parametrize("name", ["folder.gz", "folder.tar", "notes.txt"])
def test_a_tar_archive_given_as_text_is_one_line_naming_it(tmp_path: Path, name: str) -> None:
    """A tar header is ASCII and NUL bytes, valid UTF-8: without a check it trains as text."""
    docs = write_corpus(tmp_path / "docs")
    corpus = write_corpus(tmp_path / "corpus")
    mode = "w:gz" if name.endswith(".gz") else "w"
    with tarfile.open(corpus / name, mode) as archive:
        archive.add(docs, arcname="docs")
    cache = tmp_path / "cache"
    message = refusal(lambda: build_or_load(cache, TextFilesSource(str(corpus)), CHAR, workers=1))
    assert f"'{corpus / name}' is a tar archive, not text: extract it" in message, message
    assert_no_cache_left(cache)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"text": "x", "n": ' + "1" * 5000 + "}", ":2 cannot be read as JSON (Exceeds the limit"),
        ("[" * 100_000, ":2 cannot be read as JSON (maximum recursion depth"),
        ('{"text": "half of \\ud83d a smiley"}', ":2 has a lone surrogate escape"),
    ],
    ids=["huge number", "nested too deep", "lone surrogate"],
)
def test_a_jsonl_line_python_cannot_use_names_the_file_and_line(
    tmp_path: Path, line: str, says: str
) -> None:
    """Lines json.loads refuses with another error than a JSONDecodeError, or decodes to text
    that is no Unicode (UTF-8 cannot encode half of a surrogate pair)."""
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "fine \\ud83d\\ude42"}\n' + line + "\n")
    message = refusal(lambda: load_splits(TextFilesSource(str(path))))
    assert f"{path}{says}" in message, message


@pytest.mark.parametrize("streaming", [False, True], ids=["cached", "streaming"])
@pytest.mark.parametrize(
    ("name", "data", "says"),
    [
        (
            "cut.jsonl",
            b'{"text": "fine"}\n{"text": "cut sh\n{"text": "x"}\n',
            "could not be parsed",
        ),
        ("not.parquet", b"PAR0 these bytes are no parquet file" * 4, "could not be parsed"),
        ("cut.jsonl.gz", gzip.compress(records(3000))[:-300], "ends before the end of its gzip"),
        ("plain.txt.gz", b"plain text, never compressed\n" * 10, "is not gzip data"),
        ("no_field.jsonl", b'{"text": "fine"}\n{"body": "other"}\n', "row 1 (from 0) of split"),
    ],
    ids=["bad jsonl line", "not parquet", "cut gz", "not gz", "no text field"],
)
def test_a_bad_local_file_read_as_a_hf_dataset_is_one_line_naming_it(
    tmp_path: Path, name: str, data: bytes, says: str, streaming: bool
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    source = HFDatasetSource(str(path), streaming=streaming, cache_dir=str(tmp_path / "hf"))
    cache = tmp_path / "cache"
    message = refusal(lambda: build_or_load(cache, source, CHAR, workers=1))
    assert str(path) in message and says in message, message
    assert_no_cache_left(cache)


@pytest.mark.parametrize("streaming", [False, True], ids=["cached", "streaming"])
def test_the_bad_file_among_several_of_a_hf_dataset_is_named(
    tmp_path: Path, streaming: bool
) -> None:
    folder = tmp_path / "parts"
    folder.mkdir()
    for i in range(4):
        (folder / f"part{i}.jsonl").write_bytes(records(50, seed=i))
    (folder / "part2.jsonl").write_bytes(records(20) + b'{"text": "no end}\n')
    source = HFDatasetSource(str(folder), streaming=streaming, cache_dir=str(tmp_path / "hf"))
    message = refusal(lambda: load_splits(source))
    assert f"'{folder / 'part2.jsonl'}' could not be parsed (JSON parse error" in message, message


def test_a_cut_gz_file_met_while_the_bpe_trainer_reads_is_one_line(tmp_path: Path) -> None:
    """The Rust trainer pulls the documents from Python and raises what their iterator raised."""
    corpus = write_corpus(tmp_path / "corpus")
    # A file in train (split by a hash of its name; with no file hashed to val, the last goes
    # there), so that BPE reads it.
    for name in (f"a_cut{i}.txt.gz" for i in range(100)):
        cut = corpus / name
        cut.write_bytes(GZIP_FILES["cut.txt.gz"][0])
        files, base = TextFilesSource(str(corpus)).file_list()
        if assign_splits(files, base, 0.1)[files.index(cut)] == "train":
            break
        cut.unlink()
    assert cut.exists()
    result = run_cli(
        "train",
        *tiny_cli(tmp_path, tmp_path / "data", "data.tokenizer.kind=bpe", corpus=corpus),
    )
    assert_one_line_error(result, f"'{cut}' ends before the end of its gzip")
    assert_no_cache_left(tmp_path / "data" / "cache")


def test_a_cut_gz_file_met_while_workers_encode_is_one_line(tmp_path: Path) -> None:
    """A pretrained tokenizer reads nothing before encoding: the parent meets the bad file while
    two forked workers encode small chunks of the files before it."""
    tokenizer = tmp_path / "tokenizer"
    build_tokenizer("bpe", [records(200).decode()], vocab_size=300).save_pretrained(tokenizer)
    corpus = write_corpus(tmp_path / "corpus", n_docs=8)
    (corpus / "z_cut.jsonl.gz").write_bytes(GZIP_FILES["cut.jsonl.gz"][0])
    result = run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            tmp_path / "data",
            "data.tokenizer.kind=pretrained",
            f"data.tokenizer.name={tokenizer}",
            "data.prepare_workers=2",
            "data.prepare_chunk_mb=0.002",
            corpus=corpus,
        ),
    )
    assert_one_line_error(result, f"'{corpus / 'z_cut.jsonl.gz'}' ends at line ")
    assert_no_cache_left(tmp_path / "data" / "cache")


def test_a_file_that_is_not_parquet_in_a_hf_dataset_run_is_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake.parquet"
    fake.write_bytes(b"not parquet at all\n" * 10)
    result = run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            tmp_path / "data",
            "data=hf_dataset",
            f"data.source.path={fake}",
            f"data.source.cache_dir={tmp_path / 'hf'}",
        ),
    )
    assert_one_line_error(result, f"'{fake}' could not be parsed", "Parquet magic bytes")
    assert_no_cache_left(tmp_path / "data" / "cache")
