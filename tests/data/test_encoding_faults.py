"""What went wrong silently or in a traceback while a corpus was read or encoded: a pretrained
tokenizer's truncation and padding applied to the corpus, a tokenizer worker killed, `.json`
files of JSON lines read as text, hf_dataset files with other columns, compressed or UTF-16 text.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import multiprocessing
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lmtrain.data.corpus import Piece
from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.pretrained_tokenizer import pretrained_fingerprint
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, load_meta
from lmtrain.data.tokenizers import TokenizerSettings
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import load_splits, load_tokens, token_files, write_corpus
from tests.helpers.pretrained import tiny_bpe

CHAR = TokenizerSettings.from_config({"kind": "char"})
PAD = "<pad>"


def pretrained(name: str) -> TokenizerSettings:
    return TokenizerSettings.from_config({"kind": "pretrained", "name": name})


@pytest.mark.parametrize("settings", ["truncation", "padding", "both"])
def test_a_pretrained_tokenizers_truncation_and_padding_leave_the_corpus_whole(
    tmp_path: Path, settings: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A hub tokenizer.json may truncate to 512 tokens or pad to the batch's longest text: applied
    # to the corpus, each document kept its first tokens (1.1 MB became 2049 tokens), or 93% of
    # the tokens were pads.
    corpus = write_corpus(tmp_path / "corpus", n_docs=8)
    tokenizer = tiny_bpe([p.read_text() for p in sorted(corpus.iterdir())], 300)
    tokenizer.add_special_tokens({"pad_token": PAD})
    tokenizer.save_pretrained(tmp_path / "plain")
    backend = tokenizer.backend_tokenizer
    if settings in ("truncation", "both"):
        backend.enable_truncation(max_length=8)
    if settings in ("padding", "both"):
        backend.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=PAD)
    tokenizer.save_pretrained(tmp_path / "configured")
    saved = json.loads((tmp_path / "configured" / "tokenizer.json").read_text())
    assert saved["truncation" if settings != "padding" else "padding"] is not None

    source = TextFilesSource(str(corpus))
    reference = build_or_load(tmp_path / "ref", source, pretrained(str(tmp_path / "plain")), 1)
    with caplog.at_level(logging.WARNING, logger="lmtrain.data.encode"):
        # Two workers, two documents per chunk: the pool's encoders and batches of several texts.
        folder = build_or_load(
            tmp_path / "cache", source, pretrained(str(tmp_path / "configured")), 2, 0.01
        )
    assert load_meta(folder)["prepare"]["workers"] == 2
    assert token_files(folder) == token_files(reference)
    assert load_meta(folder)["tokens"] == load_meta(reference)["tokens"]
    for split in ("train", "val"):
        assert tokenizer.pad_token_id not in np.asarray(load_tokens(folder, split))
    warnings = [r.getMessage() for r in caplog.records if r.name == "lmtrain.data.encode"]
    assert len(warnings) == 1, warnings
    named = {"truncation": ["truncation {", "'max_length': 8"], "padding": ["padding {", PAD]}
    for fragment in named.get(settings, [*named["truncation"], *named["padding"]]):
        assert fragment in warnings[0], warnings[0]
    assert "not used to encode the corpus" in warnings[0]
    # A cache built before they were turned off holds the cut corpus: its key differs now,
    # while a tokenizer without them keeps the key it always had.
    configured = pretrained_fingerprint(pretrained(str(tmp_path / "configured")))
    assert configured.get("documents_whole") is True
    assert "documents_whole" not in pretrained_fingerprint(pretrained(str(tmp_path / "plain")))


class WorkerKillingSource(TextFilesSource):
    """text_files whose reading kills a tokenizer worker with SIGKILL, as the out-of-memory killer
    does, once the pool has started; then waits for the pool to notice."""

    def documents(self) -> Iterator[Piece]:
        killed = False
        for piece in super().documents():
            workers = multiprocessing.active_children()  # the pool's forked workers, once started
            if workers and not killed:
                os.kill(workers[0].pid, signal.SIGKILL)
                killed = True
                time.sleep(0.5)
            yield piece


def test_a_killed_tokenizer_worker_is_one_line_and_leaves_no_cache(tmp_path: Path) -> None:
    # It was concurrent.futures.process.BrokenProcessPool, in a traceback.
    corpus = write_corpus(tmp_path / "corpus", n_docs=40)
    cache = tmp_path / "cache"
    source = WorkerKillingSource(str(corpus))
    message = refusal(lambda: build_or_load(cache, source, CHAR, workers=2, chunk_mb=0.001))
    assert message.startswith("a tokenizer worker process died while encoding the corpus"), message
    assert "out-of-memory" in message and "2 workers" in message, message
    assert "lower data.prepare_workers or data.prepare_chunk_mb" in message, message
    assert_no_cache_left(cache)


def test_json_files_of_json_lines_are_read_as_text_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    lines = "".join(json.dumps({"text": f"line {i}\nof text", "id": i}) + "\n" for i in range(9))
    (corpus / "a_records.json").write_text(lines)
    # Another text field: two lines that are each an object are JSON lines all the same.
    other = "".join(json.dumps({"body": f"doc {i}"}) + "\n" for i in range(3))
    (corpus / "b_records.json.gz").write_bytes(gzip.compress(other.encode()))
    # Real JSON files, which a code corpus holds: pretty-printed, or one minified object.
    (corpus / "package.json").write_text(json.dumps({"name": "x", "text": "y"}, indent=2) + "\n")
    (corpus / "config.json").write_text(json.dumps({"name": "x", "version": "1.0"}) + "\n")
    source = TextFilesSource(str(corpus))
    with caplog.at_level(logging.WARNING):
        build_or_load(tmp_path / "cache", source, CHAR, workers=1)
        build_or_load(tmp_path / "cache", source, CHAR, workers=1)  # reused: no second warning
    warnings = [r.getMessage() for r in caplog.records if r.name == "lmtrain.data.json_records"]
    assert len(warnings) == 1, warnings
    assert (
        f"'{corpus / 'a_records.json'}' holds JSON lines (as do 1 more .json file)," in warnings[0]
    )
    assert "reads it as plain text" in warnings[0] and "rename it to .jsonl" in warnings[0]
    # What is read does not change: the whole file is one document, JSON syntax included.
    train, val = load_splits(source)
    assert lines in train + val


def write_columns(folder: Path) -> Path:
    folder.mkdir()
    rows = [{"text": f"document {i} " * 5} for i in range(30)]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    more = [{**r, "source": "web"} for r in rows]
    (folder / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in more))
    return folder


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_dataset_files_with_other_columns_are_one_line(tmp_path: Path, streaming: bool) -> None:
    # It was datasets.table.CastError ("Couldn't cast ... to {'text': Value('string')}"), wrapped
    # in a DatasetGenerationError unless streaming, in a traceback.
    folder = write_columns(tmp_path / "dataset")
    source = HFDatasetSource(str(folder), streaming=streaming, cache_dir=str(tmp_path / "hf"))
    cache = tmp_path / "cache"
    message = refusal(lambda: build_or_load(cache, source, CHAR, workers=1))
    assert message.startswith(f"data.source.path={str(folder)!r} holds files"), message
    assert "disagree on their columns (one has text, source; the first read has text)" in message
    assert "give every file the same columns" in message and "data.source.data_files=" in message
    assert_no_cache_left(cache)


TEXT = "plain words of a document\n" * 40


def zip_bytes(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", text)
    return buffer.getvalue()


def zstd_frame(data: bytes) -> bytes:
    """A zstd frame holding `data` (< 256 bytes) as one raw block: `zstd -d` reads it, and no
    zstd package is needed to write it."""
    assert len(data) < 256
    block_header = (1 | len(data) << 3).to_bytes(3, "little")  # last block, raw, its size
    return b"\x28\xb5\x2f\xfd" + bytes([0x20, len(data)]) + block_header + data


# name -> (file bytes, what the message must say, {d} for the corpus folder); none may suggest
# iconv from latin-1. Each command names the file by its path and writes to a new name.
NOT_TEXT = {
    "notes.txt.xz": (lzma.compress(TEXT.encode()), "is xz-compressed data, not text: "
                     "decompress it (xz -dc {d}/notes.txt.xz > {d}/notes.txt), then move "
                     "{d}/notes.txt.xz out of the corpus"),
    # xz -d refuses a name without its suffix: -dc to a file of another name works for any
    "packed.txt": (lzma.compress(TEXT.encode()), "is xz-compressed data, not text: decompress "
                   "it (xz -dc {d}/packed.txt > {d}/packed.decompressed.txt), then move "
                   "{d}/packed.txt out"),
    "notes.txt.bz2": (bz2.compress(TEXT.encode()), "is bzip2-compressed data, not text: "
                      "decompress it (bunzip2 -c {d}/notes.txt.bz2 > {d}/notes.txt), then move"),
    "notes.zip": (zip_bytes(TEXT), "is a zip archive, not text: extract it (unzip {d}/notes.zip "
                  "-d {d}/notes) and pass the extracted folder"),
    "notes.txt.zst": (zstd_frame(TEXT[:200].encode()), "is zstd-compressed data, not text: "
                      "decompress it (zstd -dc {d}/notes.txt.zst > {d}/notes.txt), then move"),
    "notes.txt": (gzip.compress(TEXT.encode()), "is gzip-compressed data but its name does not "
                  "end in .gz: rename it to end in .gz (mv {d}/notes.txt {d}/notes.txt.gz)"),
    "utf16.txt": (TEXT.encode("utf-16"), "is UTF-16 text (it starts with a UTF-16 byte order "
                  "mark), not UTF-8: convert it, e.g. `iconv -f utf-16 -t utf-8 {d}/utf16.txt > "
                  "{d}/utf16.utf8.txt`"),
    "utf16be.txt": (b"\xfe\xff" + TEXT.encode("utf-16-be"), "`iconv -f utf-16 -t utf-8"),
    "utf32.txt": (TEXT.encode("utf-32"), "`iconv -f utf-32 -t utf-8 {d}/utf32.txt > "
                  "{d}/utf32.utf8.txt`"),
    "utf16.txt.gz": (gzip.compress(TEXT.encode("utf-16")), "`zcat {d}/utf16.txt.gz | iconv -f "
                     "utf-16 -t utf-8 | gzip > {d}/utf16.utf8.txt.gz`"),
}  # fmt: skip


@pytest.mark.parametrize("name", NOT_TEXT)
def test_compressed_and_utf16_files_get_a_fix_that_fits(tmp_path: Path, name: str) -> None:
    # Each was "is not UTF-8 text (...): convert it, e.g. `iconv -f latin1 -t utf-8 <file>`",
    # which writes garbage for compressed data and mojibake for UTF-16.
    corpus = write_corpus(tmp_path / "corpus")
    data, says = NOT_TEXT[name]
    says = says.format(d=corpus)
    (corpus / name).write_bytes(data)
    # Read first: text may start as bzip2 data does, without bzip2's block marker after it.
    (corpus / "a_starts_like_bzip2.txt").write_text("BZh9 is how bzip2 data starts\n")
    cache = tmp_path / "cache"
    message = refusal(lambda: build_or_load(cache, TextFilesSource(str(corpus)), CHAR, workers=1))
    assert message.startswith(f"'{corpus / name}' "), message
    assert says in message and "latin1" not in message, message
    assert message.endswith("or leave it out of data.source.path"), message
    assert_no_cache_left(cache)


def test_the_cli_refuses_a_utf16_file_in_one_line(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "notes.txt").write_bytes(TEXT.encode("utf-16"))
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    assert_one_line_error(result, f"'{corpus / 'notes.txt'}' is UTF-16 text", "iconv -f utf-16")
    assert_no_cache_left(tmp_path / "data" / "cache")
