"""The token cache: a corpus tokenized once into flat memory-mapped token files, reused by runs.

A cache folder is `<cache_dir>/<fingerprint>/` holding `train.bin` and `val.bin` (token ids, one
end-of-text token after each document, nanoGPT's format), `tokenizer/` (`save_pretrained` output)
and `meta.json`. The fingerprint hashes everything the tokens depend on: this format's version, the
source's class and settings, the tokenizer settings and the text itself. So editing a corpus file
or a setting gives a new folder, and the same inputs find the old one: no retraining, no encoding.

A folder is written under a temporary name and renamed into place when complete, so a crash never
leaves a half-written cache that a later run trusts; a folder that is damaged anyway (meta.json
missing, a .bin of the wrong size, no tokenizer) is removed and rebuilt with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.tokenizers import build_tokenizer

log = logging.getLogger(__name__)

# Bump when the folder layout or the token stream changes, so old caches are not trusted.
FORMAT_VERSION = 1
SPLITS = ("train", "val")
# Documents per encode call: enough for the Rust backend to parallelize, small enough for memory.
ENCODE_CHUNK_DOCS = 256


def fingerprint(
    source: Any,
    tokenizer_settings: Mapping[str, Any],
    train_docs: Sequence[str],
    val_docs: Sequence[str],
) -> str:
    """sha256 over the format version, source and tokenizer settings, and the text of each split.

    Each document is length-prefixed so that moving text between documents changes the hash.
    """
    header = {
        "format_version": FORMAT_VERSION,
        "source": type(source).__name__,
        "source_settings": source.settings(),
        "tokenizer": dict(tokenizer_settings),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
    for split, docs in zip(SPLITS, (train_docs, val_docs), strict=True):
        digest.update(f"\0{split}:{len(docs)}\0".encode())
        for doc in docs:
            data = doc.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves disk and memory while every id fits, as in nanoGPT; uint32 otherwise."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def build_or_load(
    cache_dir: str | os.PathLike[str], source: Any, tokenizer_settings: Mapping[str, Any]
) -> Path:
    """The cache folder for this source and tokenizer, built first if it is missing or damaged.

    The source is always read, since its text is part of the fingerprint; reading is cheap next to
    tokenizer training and encoding, which only happen on a miss.
    """
    train_docs, val_docs = source.load_splits()
    key = fingerprint(source, tokenizer_settings, train_docs, val_docs)
    folder = Path(cache_dir) / key
    if folder.exists():
        problem = find_problem(folder)
        if problem is None:
            log.info("Reusing token cache %s", folder)
            return folder
        log.warning("Token cache %s is damaged (%s): removing and rebuilding it", folder, problem)
        shutil.rmtree(folder, ignore_errors=True)
    tmp = folder.with_name(f"{key}.tmp-{os.getpid()}")
    try:
        write(tmp, source, tokenizer_settings, train_docs, val_docs, key)
        _move_into_place(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs."""
    try:
        os.replace(tmp, folder)
    except OSError:
        if find_problem(folder) is not None:
            raise
        log.info("Token cache %s was built concurrently by another process: using it", folder)


def write(
    folder: Path,
    source: Any,
    tokenizer_settings: Mapping[str, Any],
    train_docs: Sequence[str],
    val_docs: Sequence[str],
    key: str,
) -> None:
    """Train or load the tokenizer, encode both splits and write everything into `folder`."""
    start = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log.info("Building token cache %s from %s", folder, source.describe())
    tokenizer = build_tokenizer(
        tokenizer_settings["kind"],
        train_docs,
        vocab_size=tokenizer_settings.get("vocab_size"),
        name=tokenizer_settings.get("name"),
        val_docs=val_docs,
    )
    tokenizer.save_pretrained(folder / "tokenizer")
    dtype = token_dtype(len(tokenizer))
    counts = {
        split: encode_to_file(tokenizer, docs, folder / f"{split}.bin", dtype)
        for split, docs in zip(SPLITS, (train_docs, val_docs), strict=True)
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": key,
        "dtype": dtype.name,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "tokens": counts,
        "documents": {"train": len(train_docs), "val": len(val_docs)},
        "source": source.describe(),
        "tokenizer": dict(tokenizer_settings),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        "Tokenized %d train and %d val tokens (vocab %d) in %.1fs",
        counts["train"],
        counts["val"],
        len(tokenizer),
        time.perf_counter() - start,
    )


def encode_to_file(
    tokenizer: PreTrainedTokenizerFast, docs: Sequence[str], path: Path, dtype: np.dtype
) -> int:
    """Append each document's ids and then one eos id to `path`; returns the token count."""
    eos = tokenizer.eos_token_id
    count = 0
    with path.open("wb") as f:
        for i in range(0, len(docs), ENCODE_CHUNK_DOCS):
            chunk = docs[i : i + ENCODE_CHUNK_DOCS]
            ids = tokenizer(list(chunk), add_special_tokens=False)["input_ids"]
            for doc_ids in ids:
                doc_ids.append(eos)
            flat = np.fromiter(chain.from_iterable(ids), dtype=dtype, count=sum(map(len, ids)))
            flat.tofile(f)
            count += flat.size
    return count


def find_problem(folder: Path) -> str | None:
    """Why a cache folder cannot be trusted, or None when it is complete and consistent."""
    try:
        meta = load_meta(folder)
    except (OSError, ValueError) as err:
        return f"meta.json unreadable: {err}"
    if meta.get("format_version") != FORMAT_VERSION:
        return f"format version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
    if not (folder / "tokenizer" / "tokenizer.json").is_file():
        return "tokenizer/tokenizer.json missing"
    try:
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            path = folder / f"{split}.bin"
            expected = int(meta["tokens"][split]) * itemsize
            if not path.is_file() or path.stat().st_size != expected:
                return f"{path.name} is not {expected} bytes"
    except (KeyError, TypeError, ValueError) as err:
        return f"meta.json incomplete: {err!r}"
    return None


def load_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(folder / "tokenizer")


def load_tokens(folder: Path, split: str) -> np.memmap:
    """The split's tokens, memory-mapped read-only: the OS pages in only what batches touch."""
    meta = load_meta(folder)
    return np.memmap(folder / f"{split}.bin", dtype=meta["dtype"], mode="r")
