"""Token cache at scale: parallel = serial, exact separators, half-builds never trusted."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import AutoTokenizer

from lmtrain.data import TextDataModule, cache_checks, encode
from lmtrain.data.sources import TextFilesSource, assign_splits
from lmtrain.data.token_cache import (
    build_or_load,
    find_problem,
    fingerprint,
    load_meta,
    load_tokenizer,
)
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import (
    DOCS,
    build_tokenizer,
    split_at_eos,
    token_files,
    write_mixed_files,
)
from tests.helpers.faults import prepare_in_child, slow_datamodule

BPE = {"kind": "bpe", "vocab_size": 400, "name": None, "train_sample_mb": 1}
settings = TokenizerSettings.from_config


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write_mixed_files(tmp_path / "corpus", DOCS)


def expected_splits(folder: Path) -> dict[str, list[str]]:
    """The documents of each split, worked out from what `write_mixed_files` wrote."""
    names = sorted(f"part{i % 2}/doc{i:03}" for i in range(len(DOCS)))
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    docs = {f"part{i % 2}/doc{i:03}": doc for i, doc in enumerate(DOCS)}
    by_file = [docs[f.relative_to(folder).as_posix().split(".")[0]] for f in files]
    assert len(files) == len(names)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    for doc, split in zip(by_file, assign_splits(files, folder, 0.25), strict=True):
        splits[split].append(doc)
    return splits


def prepare(corpus: Path, cache_dir: Path, **kwargs) -> TextDataModule:
    source = TextFilesSource(str(corpus), val_fraction=0.25, block_chars=64)
    dm = TextDataModule(source, BPE, 8, 2, cache_dir=str(cache_dir), **kwargs)
    dm.prepare_data()
    return dm


def test_parallel_and_single_process_preparation_give_identical_files(
    mixed: Path, tmp_path: Path
) -> None:
    serial = prepare(mixed, tmp_path / "serial", prepare_workers=1, prepare_chunk_mb=1)
    parallel = prepare(mixed, tmp_path / "parallel", prepare_workers=2, prepare_chunk_mb=0.0005)
    assert serial.cache_path.name == parallel.cache_path.name
    assert token_files(serial.cache_path) == token_files(parallel.cache_path)
    meta = load_meta(parallel.cache_path)
    assert meta["prepare"]["workers"] == 2
    assert load_meta(serial.cache_path)["prepare"]["workers"] == 1
    assert meta["tokens"]["train"] > 1000 and meta["tokens"]["val"] > 100


def test_separators_follow_each_document_and_pieces_encode_like_whole_documents(
    mixed: Path, tmp_path: Path
) -> None:
    """A document read in 64-character pieces still has exactly the ids of the whole text."""
    dm = prepare(mixed, tmp_path / "cache", prepare_workers=2, prepare_chunk_mb=0.001)
    tokenizer = dm.tokenizer
    meta = load_meta(dm.cache_path)
    for split, docs in expected_splits(mixed).items():
        encoded = split_at_eos(dm.cache_path, split, tokenizer.eos_token_id)
        assert len(encoded) == len(docs) == meta["documents"][split]
        for ids, doc in zip(encoded, docs, strict=True):
            assert ids == tokenizer(doc, add_special_tokens=False)["input_ids"]
            assert tokenizer.decode(ids) == doc


def test_bpe_learns_from_a_sample_whose_size_is_in_the_fingerprint(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(20):
        (corpus / f"f{i:02}.txt").write_text(f"file {i} says hello {i * 7}\n" * 400)
    total = sum(p.stat().st_size for p in corpus.iterdir())
    source = TextFilesSource(str(corpus), val_fraction=0.1)
    small = BPE | {"train_sample_mb": 0.03}
    folder = build_or_load(tmp_path / "cache", source, settings(small), workers=1)
    trained_on = load_meta(folder)["tokenizer_trained_on"]
    assert 30_000 <= trained_on["bytes"] < 30_000 + 12_000 < total
    sampled = list(source.sample(30_000))
    assert len({text.split()[1] for text in sampled}) == len(sampled) > 1  # whole, distinct files
    assert fingerprint(source, settings(small)) != fingerprint(source, settings(BPE))
    assert fingerprint(source, settings(small)) == folder.name
    char = {"kind": "char", "vocab_size": 9, "train_sample_mb": 3, "name": "x"}
    assert fingerprint(source, settings(char)) == fingerprint(source, settings({"kind": "char"}))


def test_fingerprint_follows_file_stats_without_reading_text(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text\n" * 10)
    source = TextFilesSource(str(tmp_path / "a.txt"))
    before = fingerprint(source, settings(BPE))
    assert fingerprint(TextFilesSource(str(tmp_path / "a.txt")), settings(BPE)) == before
    stat = (tmp_path / "a.txt").stat()
    os.utime(tmp_path / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert fingerprint(TextFilesSource(str(tmp_path / "a.txt")), settings(BPE)) != before


def fork(
    corpus: Path, cache: Path, delay_s: float, log: Path, workers: int = 1, start: Any = None
) -> Any:
    """A real second process, forked so that it starts without re-importing torch."""
    args = (corpus, cache, delay_s, log, workers, start)
    process = multiprocessing.get_context("fork").Process(target=prepare_in_child, args=args)
    process.start()
    return process


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task").glob("*/children")
    return [int(child) for task in tasks for child in task.read_text().split()]


def test_an_interrupted_preparation_is_not_reused(
    mixed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGKILL a builder and its two workers mid-way: the next build starts over, unhindered."""
    cache = tmp_path / "cache"
    process = fork(mixed, cache, 0.05, tmp_path / "child.log", workers=2)
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size for p in cache.glob("*.tmp-*/train.bin")):
        assert process.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    workers = children(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    (leftover,) = cache.glob("*.tmp-*")
    assert not [p for p in cache.iterdir() if p.is_dir() and p != leftover]
    assert len(workers) == 2
    while any(Path(f"/proc/{pid}").exists() for pid in workers):  # they notice and exit
        assert time.monotonic() < deadline
        time.sleep(0.05)

    with caplog.at_level(logging.INFO, logger="lmtrain.data.token_cache"):
        dm = slow_datamodule(mixed, cache)
        dm.prepare_data()
    assert "left by an interrupted build" in caplog.text and "Building token cache" in caplog.text
    assert leftover.name.startswith(dm.cache_path.name) and not leftover.exists()
    assert find_problem(dm.cache_path) is None
    fresh = slow_datamodule(mixed, tmp_path / "fresh")
    fresh.prepare_data()
    assert token_files(dm.cache_path) == token_files(fresh.cache_path)


def test_concurrent_prepare_data_builds_once_and_both_processes_use_it(
    mixed: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    start = multiprocessing.get_context("fork").Barrier(2)
    logs = [tmp_path / f"rank{rank}.log" for rank in range(2)]
    processes = [fork(mixed, cache, 0.01, log, start=start) for log in logs]
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0, 0]
    paths = {log.with_suffix(".path").read_text() for log in logs}
    text = "".join(log.read_text() for log in logs)
    assert len(paths) == 1 and find_problem(Path(paths.pop())) is None
    assert text.count("Building token cache") == 1
    assert "Waiting for another process" in text and "was built by another process" in text
    assert not list(cache.glob("*.tmp-*"))
    assert json.loads(next(cache.glob("*/meta.json")).read_text())["documents"]["train"] > 0


def test_chunks_encode_in_batches_to_the_ids_of_each_piece(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokenizer = build_tokenizer("bpe", DOCS, vocab_size=400)
    ends = [i % 3 != 0 for i in range(len(DOCS))]
    expected = []
    for doc, end in zip(DOCS, ends, strict=True):
        expected += tokenizer(doc, add_special_tokens=False)["input_ids"]
        expected += [tokenizer.eos_token_id] if end else []
    json_tokenizer = tokenizer.backend_tokenizer.to_str()
    for batch_chars in (1, 500, 10**9):
        monkeypatch.setattr(encode, "BATCH_CHARS", batch_chars)
        ids = encode.ChunkEncoder(json_tokenizer, tokenizer.eos_token_id, "uint16")(DOCS, ends)
        assert ids.dtype == np.uint16 and ids.tolist() == expected


def test_a_start_loads_the_cached_tokenizer_once_and_still_checks_it(
    mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking a cache loads its tokenizer (~1 s for a 250k vocabulary): a training start
    (prepare_data, then the tokenizer for the model) and an eval start (is the cache the model
    tokenizer's? then prepare_data) each load it once, and meta.json is still checked against
    what was loaded."""
    from lmtrain.eval import cache_made_with

    cache, real, loads = tmp_path / "cache", AutoTokenizer.from_pretrained, []

    def counting(name: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(name).parent.parent == cache:  # <cache>/<fingerprint>/tokenizer
            loads.append(name)
        return real(name, *args, **kwargs)

    def new_process() -> None:
        loads.clear()
        monkeypatch.setattr(cache_checks, "_last", None)

    def train_start() -> TextDataModule:  # what train.py asks of the data module
        dm = prepare(mixed, cache)
        dm.setup("fit")
        assert dm.tokenizer.eos_token_id == load_meta(dm.cache_path)["eos_token_id"]
        return dm

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", counting)
    new_process()
    train_start()  # builds the cache: the model's tokenizer is the one load
    assert len(loads) == 1
    new_process()
    dm = train_start()
    assert len(loads) == 1, f"a training start loaded the cached tokenizer {len(loads)} times"
    new_process()
    source = TextFilesSource(str(mixed), val_fraction=0.25, block_chars=64)
    evaluated = TextDataModule(source, BPE, 8, 2, cache_dir=str(cache))
    assert cache_made_with(evaluated, dm.tokenizer)
    evaluated.prepare_data()
    evaluated.setup("validate")
    assert len(loads) == 1, f"an eval start loaded the cached tokenizer {len(loads)} times"
    assert load_tokenizer(dm.cache_path) is not dm.tokenizer  # each caller its own to change

    loads.clear()
    meta = load_meta(dm.cache_path)
    other = (meta["eos_token_id"] + 1) % meta["vocab_size"]
    (dm.cache_path / "meta.json").write_text(json.dumps({**meta, "eos_token_id": other}))
    problem = find_problem(dm.cache_path)
    assert problem is not None and problem.startswith("tokenizer/ has") and not loads


def test_a_file_where_the_cache_folder_goes_is_one_line(mixed: Path, tmp_path: Path) -> None:
    # It warned "damaged: removing and rebuilding it", removed nothing (rmtree leaves a file),
    # then failed to move the new cache into place.
    path = prepare(mixed, tmp_path / "cache").cache_path
    shutil.rmtree(path)
    path.write_text("not a cache")
    with pytest.raises(LMTrainError, match="holds a file where this token cache goes") as err:
        prepare(mixed, tmp_path / "cache")
    assert path.name in str(err.value) and path.read_text() == "not a cache"


def test_a_dead_build_of_other_settings_is_removed_a_live_ones_kept(
    mixed: Path, tmp_path: Path
) -> None:
    # Only a build of the same settings removed a killed build's folder: one killed, then run
    # with any other setting, stayed on disk for good (red team rt_data, 2026-12-04).
    cache = tmp_path / "cache"
    cache.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid is free now (reused only after the kernel wraps around)
    host = socket.gethostname()
    killed = cache / f"{'a' * 64}.tmp-{host}-{dead.pid}"
    running = cache / f"{'b' * 64}.tmp-{host}-{os.getpid()}"  # a live process's
    for folder in (killed, running):
        folder.mkdir()
        (folder / "train.bin").write_bytes(b"\0" * 64)
    prepare(mixed, cache)
    assert not killed.exists() and running.is_dir()
