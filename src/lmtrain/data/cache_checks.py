"""Whether a token-cache folder can be trusted, read back as untrusted input.

Split from `lmtrain.data.token_cache` (which finds and builds caches): a folder is reused only when
`find_problem` finds nothing. meta.json must have the shape `token_cache.write` gives it, name its
own folder and a dtype that fits its vocabulary; the token files their sizes and sampled
checksums (`lmtrain.data.checksums`); the tokenizer must be the one saved with them. Anything
else (damage, an edit, a folder copied from another cache) makes the caller rebuild.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmtrain.data.checksums import damaged_files, folder_checksums
from lmtrain.data.corpus import SPLITS
from lmtrain.errors import first_line

# Bump when the folder layout or the token stream changes, so old caches are not trusted.
# 3: meta.json holds each token file's checksums. 4: a special token's spelling in the text is
# encoded as plain text (it was the token itself: fake document boundaries); meta.json holds the
# tokenizer files' checksums.
FORMAT_VERSION = 4


@dataclass
class _Loaded:
    """What loading one saved tokenizer gave, keyed by its folder and its files' sha256.

    Loading a 250k vocabulary takes about a second, and a start checks a cache up to three times
    (eval: whether the model's tokenizer made it, then `build_or_load`) before the data module
    loads the tokenizer it serves. Byte-identical files in the same folder load to the same
    tokenizer, so the size and eos id are checked against every meta.json without loading again,
    and the tokenizer itself goes to the first `load_tokenizer` that asks (one owner: callers
    may change theirs).
    """

    key: tuple[str, tuple[tuple[str, str], ...]]
    size: int
    eos_token_id: int | None
    tokenizer: PreTrainedTokenizerFast | None


_last: _Loaded | None = None  # one entry: the cache this process is using


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves disk and memory while every id fits, as in nanoGPT; uint32 otherwise."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def find_problem(folder: Path) -> str | None:
    """Why a cache folder cannot be trusted, or None when it is complete and consistent.

    Read back as untrusted: meta.json must have `write`'s shape, name this folder and a dtype that
    fits its vocabulary; the token files its sizes and sampled checksums (an id outside the
    vocabulary between the samples is refused when read: `lmtrain.data.windows`); the tokenizer
    the files saved with it, loading to meta's vocabulary and eos id.
    """
    try:
        meta = load_meta(folder)
    except (OSError, ValueError, RecursionError) as err:
        return f"meta.json unreadable: {first_line(err)}"
    if isinstance(meta, dict) and meta.get("format_version") != FORMAT_VERSION:
        return f"format version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
    problem = meta_shape_problem(meta, SPLITS)
    if problem is not None:
        return f"meta.json {problem}"
    if meta["fingerprint"] != folder.name:
        return f"meta.json belongs to the cache {meta['fingerprint']!r}, not to this folder"
    dtype = token_dtype(meta["vocab_size"])
    if meta["dtype"] != dtype.name:
        return f"meta.json dtype {meta['dtype']!r}, but {meta['vocab_size']} ids need {dtype.name}"
    tokenizer_files = folder_checksums(folder / "tokenizer")
    if tokenizer_files != meta["tokenizer_checksums"]:
        return "tokenizer/ does not match its checksums"
    paths = {split: folder / f"{split}.bin" for split in SPLITS}
    for split, path in paths.items():
        expected = meta["tokens"][split] * dtype.itemsize
        if not path.is_file() or path.stat().st_size != expected:
            return f"{path.name} is not {expected} bytes"
    damaged = damaged_files(paths, meta["checksums"])
    if damaged:
        return f"{', '.join(f'{d}.bin' for d in damaged)} does not match its checksum"
    return _tokenizer_problem(folder, meta, tokenizer_files)


def _tokenizer_problem(folder: Path, meta: dict[str, Any], files: dict[str, str]) -> str | None:
    """Why the saved tokenizer does not serve this cache's ids (unloadable, another size or eos).

    `files` are its files' checksums: the same files as the last load's are not loaded again."""
    global _last
    key = _key(folder, files)
    if _last is None or _last.key != key:
        try:
            tokenizer = _read_tokenizer(folder)
        except Exception as err:  # files from disk: transformers and Rust raise anything
            return f"tokenizer/ unreadable ({type(err).__name__}: {first_line(err)})"
        _last = _Loaded(key, len(tokenizer), tokenizer.eos_token_id, tokenizer)
    if _last.size != meta["vocab_size"] or _last.eos_token_id != meta["eos_token_id"]:
        return (
            f"tokenizer/ has {_last.size} tokens and eos id {_last.eos_token_id}, "
            f"meta.json {meta['vocab_size']} and {meta['eos_token_id']}"
        )
    return None


def load_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "meta.json").read_text())


def load_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in the cache: the one `find_problem` loaded when its files are still
    the same (once: a second caller gets its own), else read from the folder."""
    spare = _last
    if spare is None or spare.tokenizer is None:
        return _read_tokenizer(folder)
    if spare.key != _key(folder, folder_checksums(folder / "tokenizer")):
        return _read_tokenizer(folder)
    tokenizer, spare.tokenizer = spare.tokenizer, None
    return tokenizer


def _read_tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """Never code from the folder (no prompt either)."""
    return AutoTokenizer.from_pretrained(folder / "tokenizer", trust_remote_code=False)


def _key(folder: Path, files: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    return str((folder / "tokenizer").resolve()), tuple(sorted(files.items()))


def meta_shape_problem(meta: Any, splits: Iterable[str]) -> str | None:
    """What in a parsed meta.json is not of the shape the cache writes, or None.

    Checked before any value is used, so a hand-edited or foreign file (an array, counts as
    strings) reads as damage, and what the data module reads later is known to be valid.
    """
    if not isinstance(meta, dict):
        return f"holds a {type(meta).__name__}, not an object"
    whole = {"format_version": 0, "vocab_size": 1, "eos_token_id": 0}
    for key, low in whole.items():
        if not _is_count(meta.get(key), low):
            return f"{key}={meta.get(key)!r} is not a whole number of at least {low}"
    if meta["eos_token_id"] >= meta["vocab_size"]:
        return f"eos_token_id={meta['eos_token_id']} is outside the vocabulary"
    for key in ("fingerprint", "dtype"):
        if not isinstance(meta.get(key), str):
            return f"{key}={meta.get(key)!r} is not a string"
    tokens, checksums = meta.get("tokens"), meta.get("checksums")
    for split in splits:
        if not isinstance(tokens, dict) or not _is_count(tokens.get(split), 0):
            return f"tokens={tokens!r} has no whole number for {split}"
        recorded = checksums.get(split) if isinstance(checksums, dict) else None
        if not isinstance(recorded, dict) or not all(
            isinstance(recorded.get(kind), str) for kind in ("sha256", "sampled")
        ):
            return f"checksums has no sha256 and sampled digest for {split}"
    files = meta.get("tokenizer_checksums")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        return "tokenizer_checksums is not an object of digests"
    documents = meta.get("documents")  # read by the data module's hints
    if documents is not None and not (
        isinstance(documents, dict) and all(_is_count(v, 0) for v in documents.values())
    ):
        return f"documents={documents!r} is not an object of counts"
    return None


def _is_count(value: Any, low: int) -> bool:
    """An int (not a bool: JSON true is not a count) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low
