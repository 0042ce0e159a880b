"""Corpus files that cannot be used and disks that fill up: one clear error, nothing half-written.

The full disk is real, never a patched write: a small tmpfs where this machine lets us mount one
(ENOSPC), and everywhere a file size limit on the process (`ulimit -f`: EFBIG from the kernel).
"""

from __future__ import annotations

import gzip
import resource
from pathlib import Path

import pytest

from lmtrain.data.corpus import first_invalid_utf8, read_text_pieces
from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, find_problem
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import fast_dev_run_cli, run_cli
from tests.helpers.corpora import load_tokens
from tests.helpers.faults import mounted_tmpfs

CHAR = {"kind": "char", "vocab_size": None, "name": None, "train_sample_mb": None}
settings = TokenizerSettings.from_config


def test_first_invalid_utf8_is_a_file_offset_across_blocks_and_gzip(tmp_path: Path) -> None:
    good = "café 日本語 🙂\n".encode() * 50  # multi-byte characters straddle the tiny blocks
    data = good + b"\xff tail"
    plain = tmp_path / "latin.txt"
    plain.write_bytes(data)
    packed = tmp_path / "latin.txt.gz"
    packed.write_bytes(gzip.compress(data))
    for path in (plain, packed):
        assert first_invalid_utf8(path, block_bytes=7) == len(good)
        assert first_invalid_utf8(path) == len(good)
    (tmp_path / "ok.txt").write_bytes(good)
    assert first_invalid_utf8(tmp_path / "ok.txt", block_bytes=7) is None

    # Reading in blocks of a few characters, the error still names the offset in the file.
    with pytest.raises(LMTrainError, match=rf"'{plain}' is not UTF-8 text .* at byte {len(good)}"):
        list(read_text_pieces(plain, block_chars=16))
    # A .gz file converts through gzip: iconv on its compressed bytes would write garbage.
    with pytest.raises(LMTrainError) as err:
        list(read_text_pieces(packed, block_chars=16))
    # Named by their paths, into a new file (`latin.utf8.txt.gz`: still read through gzip).
    converts = f"`zcat {packed} | iconv -f latin1 -t utf-8 | gzip > {tmp_path}/latin.utf8.txt.gz`"
    assert converts in str(err.value), err.value


def test_non_utf8_corpus_is_refused_with_its_offset_and_how_to_convert(tmp_path: Path) -> None:
    corpus = tmp_path / "notes.txt"
    corpus.write_bytes(b"plain ascii line\n" * 100 + "naïve".encode("latin-1") + b"\n")
    result = run_cli("train", *fast_dev_run_cli(corpus, tmp_path))
    assert_one_line_error(result, str(corpus), "not UTF-8", f"at byte {17 * 100 + 2}", "iconv")
    assert not list((tmp_path / "data" / "cache").glob("*.tmp-*"))


@pytest.mark.parametrize("streaming", [False, True])
def test_non_utf8_hf_dataset_names_the_encoding_option(tmp_path: Path, streaming: bool) -> None:
    corpus = tmp_path / "latin.txt"
    corpus.write_bytes("first line\nna\u00efve\n".encode("latin-1"))
    cache = str(tmp_path / "hf")
    source = HFDatasetSource(path=str(corpus), streaming=streaming, cache_dir=cache)
    with pytest.raises(LMTrainError, match=r"is not UTF-8 text.*load_kwargs=\{encoding:latin-1\}"):
        list(source.documents())
    fixed = HFDatasetSource(
        path=str(corpus), streaming=streaming, cache_dir=cache, load_kwargs={"encoding": "latin-1"}
    )
    assert [piece.text for piece in fixed.documents()] == ["first line", "na\u00efve"]


def old_cache(cache_dir: Path, corpus_dir: Path) -> tuple[Path, dict[str, bytes]]:
    """A small, complete cache in `cache_dir` and the bytes of its files, to check it survives."""
    corpus_dir.mkdir()
    (corpus_dir / "small.txt").write_text("a small corpus that fits anywhere\n" * 40)
    folder = build_or_load(cache_dir, TextFilesSource(str(corpus_dir)), settings(CHAR), workers=1)
    return folder, {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def big_corpus(path: Path) -> Path:
    """880 KB of text: 1.8 MB of char tokens (uint16), more than a 1 MB disk or file holds."""
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 20_000)
    return path


def assert_untouched(folder: Path, files: dict[str, bytes]) -> None:
    assert find_problem(folder) is None
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == files
    assert len(load_tokens(folder, "train")) > 0
    leftovers = [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name]
    assert leftovers == []
    # Only the old folder (and lock files): the failed build left nothing a run could trust.
    assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == [folder.name]


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 1 MB tmpfs mounted in tmp_path, where the machine allows it (root with CAP_SYS_ADMIN)."""
    with mounted_tmpfs(tmp_path / "tmpfs", "size=1m") as folder:
        yield folder


def test_full_disk_while_writing_the_cache_keeps_the_old_cache(
    small_tmpfs: Path, tmp_path: Path
) -> None:
    cache_dir = small_tmpfs / "cache"
    folder, files = old_cache(cache_dir, tmp_path / "small")
    big = big_corpus(tmp_path / "big.txt")

    with pytest.raises(LMTrainError) as caught:
        build_or_load(cache_dir, TextFilesSource(str(big)), settings(CHAR), workers=1)
    message = str(caught.value)
    assert "No space left on device" in message, message
    assert str(cache_dir) in message and "data.cache_dir=" in message, message
    assert_untouched(folder, files)


def test_file_size_limit_while_writing_the_cache_is_one_line(tmp_path: Path) -> None:
    cache_dir = tmp_path / "data" / "cache"
    folder, files = old_cache(cache_dir, tmp_path / "small")
    limit = 1 << 20  # the big corpus needs 1.8 MB of uint16 tokens

    def limit_file_size() -> None:  # runs in the child; Python ignores SIGXFSZ, so EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = run_cli(
        "train",
        *fast_dev_run_cli(big_corpus(tmp_path / "big.txt"), tmp_path),
        preexec_fn=limit_file_size,
    )
    assert_one_line_error(
        result, "could not write the token cache", "File too large", "data.cache_dir="
    )
    assert_untouched(folder, files)
