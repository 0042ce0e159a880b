"""`.json` files of `data=text_files` that hold JSON lines: read as text, and said so once.

`data=text_files` reads only `.jsonl` / `.ndjson` files as records; any other file, `.json`
included, is one document of plain text, since code corpora hold real JSON files (package.json,
configs, fixtures) that are text to learn. A `.json` file of `{"text": ...}` lines is then trained
on with its field names, quotes and `\\n` escapes, where `data=hf_dataset` would read its records.
What is read does not change; a warning names the first such file and how many there are, so that
whoever meant records renames them to `.jsonl`.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# The records' text field by default (data.source.text_field).
TEXT_FIELD = "text"
# Characters of a first line read at most: a longer line (minified JSON) is not looked at, so that
# a multi-GB one-line file costs no more than this.
MAX_LINE_CHARS = 1 << 20
# The warnings given, by their message: a run fingerprints its source more than once.
_warned: set[str] = set()


def warn_json_lines(files: Iterable[Path]) -> None:
    """Warn once for the `.json` (or `.json.gz`) files among `files` that hold JSON lines."""
    found = [path for path in files if _is_json(path) and _holds_json_lines(path)]
    if not found:
        return
    more = len(found) - 1
    others = f" (as do {more} more .json file{'s' if more > 1 else ''})" if more else ""
    message = (
        f"{str(found[0])!r} holds JSON lines{others}, but data=text_files reads it as plain text, "
        "field names and escapes included (records come only from .jsonl and .ndjson files): "
        "rename it to .jsonl to train on its records' text"
    )
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _is_json(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".json")


def _holds_json_lines(path: Path) -> bool:
    """Whether the file reads as JSON lines rather than one JSON value (see `_looks_like_records`);
    stat'ed so that a file unchanged since it was last looked at is not read again."""
    try:
        stat = path.stat()
    except OSError:
        return False  # reading it reports the problem
    return _looks_like_records(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def _looks_like_records(path: str, size: int, mtime_ns: int) -> bool:
    """The first non-empty line is a JSON object that holds a string `text` field, or that is
    followed by another line holding an object (never one valid JSON document: JSON lines).

    `size` and `mtime_ns` only key the cache. A pretty-printed file starts with a line `{` that
    does not parse; a minified one is a single line, an object with a `text` string rarely.
    """
    try:
        with _open(Path(path)) as f:
            first = _next_object(f)
            if first is None:
                return False
            if isinstance(first.get(TEXT_FIELD), str):
                return True
            return _next_object(f) is not None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):  # reading says it
        return False


def _open(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _next_object(f: IO[str]) -> dict[str, Any] | None:
    """The next non-empty line of `f` as a JSON object, or None (no such line, or not one)."""
    for line in iter(lambda: f.readline(MAX_LINE_CHARS), ""):
        if not line.strip():
            continue
        if not line.endswith("\n") and len(line) >= MAX_LINE_CHARS:
            return None  # too long to look at
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):
            return None
        return value if isinstance(value, dict) else None
    return None
