"""Corpus inputs that trained on garbage or ended in a traceback (red team rev_data18):

- `data=hf_dataset` on UTF-16 text (or any row holding a NUL) trained on NUL-separated letters;
- a setting typed as a number (`data.source.path=2024`, a folder; `data.tokenizer.name=123`;
  `data.source.val_split=5`) was a TypeError or AttributeError, a list or a mapping a traceback or
  read as its keys;
- JSON nested deeper than Python's recursion limit was a RecursionError traceback;
- a hard-linked file was read twice, into train and val both;
- a UTF-8 byte order mark became a U+FEFF character of the corpus.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import load_meta
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY
from tests.helpers.corpora import load_splits, write_corpus, write_jsonl, write_parquet
from tests.helpers.pretrained import tiny_bpe

NUL_FILE = "holds a NUL byte at byte 1: it is binary data, or UTF-16/UTF-32 text"


def hf_run(tmp_path: Path, path: object, *overrides: str) -> list[str]:
    """A tiny char-level `data=hf_dataset` run on `path`, datasets' cache under tmp_path."""
    return tiny_cli(
        tmp_path,
        tmp_path / "data",
        "data=hf_dataset",
        f"data.source.path={path}",
        f"data.source.cache_dir={tmp_path / 'hf'}",
        "data.source.val_fraction=0.2",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
        *overrides,
    )


def only_cache(data_dir: Path) -> dict:
    """The meta.json of the one token cache under `data_dir`."""
    caches = [p for p in (data_dir / "cache").iterdir() if (p / "meta.json").is_file()]
    assert len(caches) == 1, caches
    return load_meta(caches[0])


def save_tokenizer_folder(folder: Path) -> Path:
    texts = [p.read_text() for p in write_corpus(folder.parent / "tok-text").iterdir()]
    tiny_bpe(texts, 300).save_pretrained(folder)
    return folder


# -- NUL characters in data=hf_dataset rows -----------------------------------------------------


def test_hf_dataset_refuses_a_utf16_file_naming_it_as_text_files_does(tmp_path: Path) -> None:
    """UTF-16 text without a byte order mark passes for UTF-8 (its ASCII bytes and NULs): the
    text builder gave rows of NUL-separated letters, and the run exited 0."""
    text = write_corpus(tmp_path / "docs", n_docs=1).joinpath("doc0.txt").read_text()
    utf16 = tmp_path / "u16" / "a.txt"
    utf16.parent.mkdir()
    utf16.write_bytes(text.encode("utf-16-le"))
    result = run_cli("train", *hf_run(tmp_path, utf16))
    assert_one_line_error(result, f"'{utf16}' {NUL_FILE}", "iconv -f utf-16le -t utf-8")
    assert_no_cache_left(tmp_path / "data" / "cache")


def test_hf_dataset_refuses_a_parquet_row_with_a_nul_naming_row_and_column(
    tmp_path: Path,
) -> None:
    """A parquet or hub row has no file to name: the row, its split and column are named."""
    docs = ["the quick brown fox jumps over the lazy dog. " * 20] * 30
    docs[7] = "token ids\x00\x05\x00 read as text"
    parquet = write_parquet(tmp_path / "rows.parquet", docs)
    result = run_cli("train", *hf_run(tmp_path, parquet, "data.source.streaming=true"))
    assert_one_line_error(
        result,
        f"data.source.path='{parquet}': row 7 (from 0) of split 'train' holds a NUL character "
        "in 'text' (at character 9)",
        "clean or drop such rows",
    )
    assert_no_cache_left(tmp_path / "data" / "cache")


def test_an_escaped_nul_in_a_jsonl_record_is_refused_by_text_files_too(tmp_path: Path) -> None:
    """A NUL escaped as \\u0000 is no NUL byte of the file, and is refused by both sources."""
    path = write_jsonl(tmp_path / "a.jsonl", ["plain text", "bad\x00text", "more text"])
    message = refusal(lambda: load_splits(TextFilesSource(str(path))))
    assert message.startswith(f"{path}:2 has a NUL character (\\u0000) in 'text'"), message


# -- settings typed as numbers, lists or mappings -----------------------------------------------


def test_numbers_name_a_corpus_folder_and_a_tokenizer_folder_as_typed(tmp_path: Path) -> None:
    """`data.source.path=2024` and `data.tokenizer.name=123`, folders in the working directory:
    Hydra passes ints (a TypeError in TextFilesSource, an AttributeError in names_local_path)."""
    write_corpus(tmp_path / "2024")
    save_tokenizer_folder(tmp_path / "123")
    overrides = [
        *TINY,
        "data=text_files",
        "data.source.path=2024",
        "data.tokenizer.kind=pretrained",
        "data.tokenizer.name=123",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HYDRA_FULL_ERROR": "0"}
    result = subprocess.run(
        [sys.executable, "-m", "lmtrain.train", *overrides],
        cwd=tmp_path,  # the folders are named relative to it, as a user types them
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    meta = only_cache(tmp_path / "data")
    assert sum(meta["documents"].values()) == 4  # the four files of folder 2024


def test_a_number_names_a_split_as_typed(tmp_path: Path) -> None:
    """`data.source.val_split=5`: the split named 5 (an AttributeError in check_splits)."""
    docs = [f"document {i}: the quick brown fox jumps over the lazy dog. " * 8 for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", docs[:30])
    val = write_jsonl(tmp_path / "heldout.jsonl", docs[30:])
    overrides = [f"data.source.data_files={{train:{train},5:{val}}}", "data.source.val_split=5"]
    result = run_cli("train", *hf_run(tmp_path, "json", *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    assert only_cache(tmp_path / "data")["documents"] == {"train": 30, "val": 10}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["data=text_files", "data.source.path={a:1}"],
            "data.source.path={'a': 1} is a mapping, not text: pass a file, folder or glob",
        ),
        (
            ["data=text_files", "data.source.path=[docs,[a]]"],
            "data.source.path[1]=['a'] is a list, not text",
        ),
        (
            ["data=hf_dataset", "data.source.path=docs", "data.source.val_split=[a,b]"],
            "data.source.val_split=['a', 'b'] is a list, not text: pass a split name",
        ),
        (
            ["data=hf_dataset", "data.source.path={a:1}"],
            "data.source.path={'a': 1} is a mapping, not text: pass a hub id",
        ),
        (
            ["data.tokenizer.kind=pretrained", "data.tokenizer.name=[a]"],
            "data.tokenizer.name=['a'] is a list, not text: pass a Hugging Face hub id",
        ),
    ],
    ids=["text-path-mapping", "text-path-nested-list", "val-split-list", "hf-path-mapping", "name"],
)
def test_a_list_or_mapping_where_a_name_is_expected_is_one_line(
    tmp_path: Path, overrides: list[str], fragment: str
) -> None:
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", *overrides))
    assert_one_line_error(result, fragment)
    assert_no_cache_left(tmp_path / "data" / "cache")


# -- JSON nested too deep -------------------------------------------------------------------------


def test_a_tokenizer_config_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    folder = save_tokenizer_folder(tmp_path / "tok")
    (folder / "tokenizer_config.json").write_text("[" * 200_000 + "]" * 200_000)
    overrides = ["data.tokenizer.kind=pretrained", f"data.tokenizer.name={folder}"]
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", *overrides))
    assert_one_line_error(
        result,
        f"data.tokenizer.name='{folder}' has an unreadable tokenizer_config.json "
        "(maximum recursion depth exceeded",
    )


def test_a_saved_dataset_dict_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "saved"
    (folder / "train").mkdir(parents=True)
    (folder / "dataset_dict.json").write_text("[" * 100_000 + "]" * 100_000)
    result = run_cli("train", *hf_run(tmp_path, folder))
    assert_one_line_error(result, f"{folder / 'dataset_dict.json'} does not list the split")


# -- hard links -----------------------------------------------------------------------------------


def test_a_hard_linked_file_is_read_once(tmp_path: Path) -> None:
    """`ln doc0.txt doc0-copy.txt`: two real paths, one text. Read twice, it trained twice and
    landed in train and val both (a symbolic link was read once already)."""
    corpus = write_corpus(tmp_path / "docs")
    os.link(corpus / "doc0.txt", corpus / "doc0-copy.txt")
    os.symlink("doc1.txt", corpus / "doc1-link.txt")
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(only_cache(tmp_path / "data")["documents"].values()) == 4


def test_hf_dataset_refuses_a_val_file_hard_linked_to_a_train_file(tmp_path: Path) -> None:
    docs = [f"document {i}: the quick brown fox jumps over the lazy dog. " * 8 for i in range(40)]
    train = write_jsonl(tmp_path / "train.jsonl", docs)
    val = tmp_path / "val.jsonl"
    os.link(train, val)
    overrides = [f"data.source.data_files={{train:{train},validation:{val}}}"]
    result = run_cli(
        "train", *hf_run(tmp_path, "json", *overrides, "data.source.val_split=validation")
    )
    assert_one_line_error(result, "both read 1 file", "validation would measure the training data")


# -- a UTF-8 byte order mark ----------------------------------------------------------------------


def test_a_byte_order_mark_is_not_corpus_text(tmp_path: Path) -> None:
    """Windows editors start UTF-8 files with EF BB BF: it was a U+FEFF character in the corpus
    and the char vocabulary. A JSON-lines file that starts with one is read too (it was refused
    as invalid JSON)."""
    corpus = write_corpus(tmp_path / "docs")
    first = corpus / "doc0.txt"
    first.write_bytes(b"\xef\xbb\xbf" + first.read_bytes())
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    assert result.returncode == 0, result.stderr[-3000:]
    text = "".join(p.read_text(encoding="utf-8-sig") for p in corpus.iterdir())
    assert only_cache(tmp_path / "data")["vocab_size"] == len(set(text)) + 1  # + end of text

    records = tmp_path / "bom.jsonl"
    records.write_bytes(
        b"\xef\xbb\xbf" + write_jsonl(tmp_path / "plain.jsonl", ["a", "b"]).read_bytes()
    )
    train, val = load_splits(TextFilesSource(str(records), val_fraction=0.5))
    assert sorted(train + val) == ["a", "b"]
