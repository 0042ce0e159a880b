"""Tokenize a stream of document pieces into flat token files, on every core, in bounded memory.

The parent reads pieces from the source and groups them, per split, into chunks of about
`chunk_bytes` of text; worker processes encode chunks with the Rust tokenizer's
`encode_batch_fast` (one thread each, since there is one process per core) and send back a numpy
array of ids, an end-of-text id after each document; the parent appends arrays to `<split>.bin`
in the order the chunks were made. At most two chunks per worker are in flight, so memory is
bounded by the chunk size whatever the corpus size, and since every piece is encoded on its own
the files are byte-identical for any number of workers and any chunk size.

Workers are forked on Linux: they start in milliseconds and share the parent's pages, where spawn
would re-import the entry point (torch, Lightning) in each of them. They only use `tokenizers` and
numpy, rebuilt from the tokenizer's JSON.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from tokenizers import Tokenizer

from lmtrain.data.corpus import MB, SPLITS, Piece, utf8_len
from lmtrain.data.corpus_tokenizer import (
    choose_cut_plan,
    plain_text_tokenizer,
    recut_pieces,
    strip_prefix,
)
from lmtrain.data.coverage import explain_failure
from lmtrain.data.dropped_characters import CharacterCheck, UnknownTally
from lmtrain.data.progress import tokenizing_progress
from lmtrain.errors import LMTrainError

log = logging.getLogger(__name__)

# Chunks in flight per worker: one being encoded, one queued, so no worker waits for the parent.
CHUNKS_PER_WORKER = 2
# Characters per encode call inside a chunk: bounds the tokenizer's per-token bookkeeping.
BATCH_CHARS = 1 << 18


@dataclass
class Chunk:
    """Pieces of one split, encoded together; `ends[i]` says whether an end-of-text follows."""

    split: str
    texts: list[str] = field(default_factory=list)
    ends: list[bool] = field(default_factory=list)
    nbytes: int = 0
    continued: list[bool] = field(default_factory=list)  # whether a piece continues a document
    where: tuple[str, int] = ("train", 0)  # the split, and its documents ended before the chunk


@dataclass
class EncodeStats:
    """What `encode_corpus` wrote: tokens, documents and text bytes per split, and the time."""

    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    documents: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    seconds: float = 0.0
    workers: int = 1


class ChunkEncoder:
    """Encodes chunks into flat id arrays; one lives in each worker (or in the parent)."""

    def __init__(self, tokenizer_json: str, eos_id: int, dtype: str, prefix: str = "") -> None:
        self.tokenizer = plain_text_tokenizer(tokenizer_json)
        self.eos_id = eos_id
        self.dtype = np.dtype(dtype)
        self.prefix = prefix  # encoded before continuation pieces, then dropped (CutPlan.prefix)
        self.prefix_ids = self._encode_one(prefix) if prefix else []
        self.check = CharacterCheck(self.tokenizer, tokenizer_json)

    def __call__(
        self, texts: list[str], ends: list[bool], continued: list[bool] | None = None
    ) -> np.ndarray:
        """Ids of every piece, with an end-of-text id after the last piece of each document.

        Encoded in batches of about `BATCH_CHARS`: an `Encoding` costs some 100 bytes per token
        (ids, offsets, token strings), so a worker's memory follows the batch, not the chunk.
        `encode_batch_fast` skips the character offsets that the token file does not need.
        numpy raises if an id does not fit the dtype; text the tokenizer cannot encode (a char
        tokenizer meeting a character it has never seen) raises an `UnencodableTextError`.
        """
        if self.prefix and continued:
            # Only a piece cut before a space: one cut where it was (text without spaces over
            # four blocks) starts mid-word, where the prefix would merge; encoded as it is, its
            # ids may differ at that cut, as under a plan without a prefix (rev_diff21).
            continued = [c and t[:1] == " " for t, c in zip(texts, continued, strict=True)]
            texts = [self.prefix + t if c else t for t, c in zip(texts, continued, strict=True)]
        arrays = []
        start = size = 0
        for i, text in enumerate(texts):
            size += len(text)
            if size >= BATCH_CHARS or i == len(texts) - 1:
                part = slice(start, i + 1)
                arrays.append(self._encode(texts[part], ends[part], (continued or [])[part]))
                start, size = i + 1, 0
        _release_free_memory()
        return np.concatenate(arrays) if arrays else np.empty(0, dtype=self.dtype)

    def encode_chunk(self, chunk: Chunk) -> tuple[np.ndarray, set[str]]:
        """The chunk's ids, and the characters seen so far that became the unknown token; a
        character the tokenizer would drop raises a `DroppedCharactersError` first."""
        self.check(chunk.texts, chunk.ends, *chunk.where)
        return self(chunk.texts, chunk.ends, chunk.continued), self.check.unknown

    def _encode(self, texts: list[str], ends: list[bool], continued: list[bool]) -> np.ndarray:
        try:
            encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        except Exception as err:  # bare Exception from Rust: find the characters it means
            raise explain_failure(self._encode_one, texts, err) from None
        flat: list[int] = []
        for i, (encoding, end) in enumerate(zip(encodings, ends, strict=True)):
            if self.prefix and continued and continued[i]:
                flat.extend(strip_prefix(encoding.ids, self.prefix_ids))
            else:
                flat.extend(encoding.ids)
            if end:
                flat.append(self.eos_id)
        return np.array(flat, dtype=self.dtype)

    def _encode_one(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids


def warn_unused_settings(tokenizer_json: str) -> None:
    """Say once, in the parent, which truncation and padding `plain_text_tokenizer` turns off."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    unused = {name: getattr(tokenizer, name) for name in ("truncation", "padding")}
    if any(unused.values()):
        log.warning(
            "The tokenizer.json's settings (%s) are not used to encode the corpus: every document "
            "is encoded whole, and training cuts its tokens into data.block_size windows",
            "; ".join(f"{name} {value}" for name, value in unused.items() if value),
        )


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only
    except (AttributeError, OSError):
        return None


_malloc_trim = _load_malloc_trim()


def _release_free_memory() -> None:
    """Hand the heap pages freed by one chunk back to the OS.

    glibc keeps them otherwise: a worker's memory then creeps up to the high-water mark of the
    largest chunk it has seen (measured: 135 MB instead of 61 MB after 25 chunks of stdlib code).
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


_worker_encoder: ChunkEncoder | None = None


def _init_worker(tokenizer_json: str, eos_id: int, dtype: str, prefix: str, parent: int) -> None:
    # One process per core already: the tokenizer's own thread pool would only oversubscribe.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    global _worker_encoder
    _worker_encoder = ChunkEncoder(tokenizer_json, eos_id, dtype, prefix)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A killed parent leaves its pool's workers waiting forever on their queue: end them."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(chunk: Chunk) -> tuple[np.ndarray, set[str]]:
    assert _worker_encoder is not None
    return _worker_encoder.encode_chunk(chunk)


def make_chunks(pieces: Iterable[Piece], chunk_bytes: int) -> Iterator[Chunk]:
    """Group pieces into per-split chunks of at least `chunk_bytes` (the last ones smaller)."""
    open_chunks = {split: Chunk(split) for split in SPLITS}
    ended = dict.fromkeys(SPLITS, True)  # whether the split's last piece ended a document
    documents = dict.fromkeys(SPLITS, 0)
    for piece in pieces:
        chunk = open_chunks[piece.split]
        if not chunk.texts:
            chunk.where = (piece.split, documents[piece.split])
        documents[piece.split] += piece.end
        chunk.texts.append(piece.text)
        chunk.ends.append(piece.end)
        chunk.continued.append(not ended[piece.split])
        ended[piece.split] = piece.end
        chunk.nbytes += utf8_len(piece.text)
        if chunk.nbytes >= chunk_bytes:
            yield chunk
            open_chunks[piece.split] = Chunk(piece.split)
    for chunk in open_chunks.values():
        if chunk.texts:
            yield chunk


def default_workers() -> int:
    """Every core this process may run on (its CPU affinity, which containers and SLURM set)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def encode_corpus(
    pieces: Iterable[Piece],
    tokenizer_json: str,
    eos_id: int,
    dtype: np.dtype,
    paths: Mapping[str, Path],
    workers: int,
    chunk_bytes: int,
    total_bytes: int | None = None,
) -> EncodeStats:
    """Encode every piece into `paths[split]`; `workers` <= 1 encodes in this process."""
    stats = EncodeStats(workers=max(1, workers))
    warn_unused_settings(tokenizer_json)
    start = time.perf_counter()
    plan = choose_cut_plan(tokenizer_json)
    chunks = make_chunks(recut_pieces(pieces, plan), chunk_bytes)
    initargs = (tokenizer_json, eos_id, dtype.name, plan.prefix)
    unknowns = UnknownTally(tokenizer_json)
    with tokenizing_progress(total_bytes) as progress:
        task = progress.add_task("Tokenizing", total=total_bytes, mb_s="-", tokens_s="-")
        # Unbuffered: a forked worker must not inherit unwritten bytes it could flush twice.
        files = {split: paths[split].open("wb", buffering=0) for split in SPLITS}
        try:
            if workers <= 1:
                encoder = ChunkEncoder(*initargs)
                results = ((c, *encoder.encode_chunk(c)) for c in chunks)
            else:
                results = _encode_in_pool(chunks, workers, initargs, chunk_bytes)
            for chunk, ids, unknown in results:
                unknowns.add(ids, unknown)
                write_all(files[chunk.split], ids)
                stats.tokens[chunk.split] += int(ids.size)
                stats.documents[chunk.split] += sum(chunk.ends)
                stats.bytes[chunk.split] += chunk.nbytes
                elapsed = time.perf_counter() - start
                mb_s = f"{sum(stats.bytes.values()) / elapsed / 1e6:.1f}"
                tokens_s = f"{sum(stats.tokens.values()) / elapsed:,.0f}"
                progress.update(task, advance=chunk.nbytes, mb_s=mb_s, tokens_s=tokens_s)
        finally:
            for f in files.values():
                f.close()
    stats.seconds = time.perf_counter() - start
    unknowns.warn()
    return stats


def write_all(f: BinaryIO, ids: np.ndarray) -> None:
    """Append `ids` to an unbuffered file, looping over short writes.

    Not `ndarray.tofile`: on a full disk it raises an OSError without an errno ("N requested
    and M written"), and the token cache needs ENOSPC to tell the user what is wrong.
    """
    view = memoryview(np.ascontiguousarray(ids)).cast("B")
    while view:
        view = view[f.write(view) :]


def _encode_in_pool(
    chunks: Iterator[Chunk], workers: int, initargs: tuple[str, int, str, str], chunk_bytes: int
) -> Iterator[tuple[Chunk, np.ndarray, set[str]]]:
    """Encoded chunks in the order they were made, with at most CHUNKS_PER_WORKER per worker out.

    A finished chunk keeps only its split, ends and size: its text is dropped as soon as it is
    sent, so the parent holds no more than the chunks in flight.
    """
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    initargs_with_parent = (*initargs, os.getpid())
    pool = ProcessPoolExecutor(
        workers, context, initializer=_init_worker, initargs=initargs_with_parent
    )
    pending: deque[tuple[Chunk, Future[tuple[np.ndarray, set[str]]]]] = deque()
    # Forked workers share the parent's heap (torch, Lightning: hundreds of MB) until a page is
    # written. The cyclic GC writes to every object it scans, which would copy that heap into
    # each worker as the run goes on; frozen objects are never scanned (CPython's advice for fork).
    gc.freeze()
    try:
        for chunk in chunks:
            future = pool.submit(_encode_in_worker, chunk)
            pending.append((Chunk(chunk.split, [], chunk.ends, chunk.nbytes), future))
            del chunk
            if len(pending) >= CHUNKS_PER_WORKER * workers:
                done, future = pending.popleft()
                yield done, *future.result()
        while pending:
            done, future = pending.popleft()
            yield done, *future.result()
    except BrokenExecutor:  # a worker killed from outside: the OOM killer, nearly always
        raise LMTrainError(
            f"a tokenizer worker process died while encoding the corpus (killed, most often by the "
            f"out-of-memory killer; {workers} workers, chunks of {chunk_bytes / MB:g} MB): lower "
            "data.prepare_workers or data.prepare_chunk_mb (memory is about 2 chunks per worker)"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        gc.unfreeze()
