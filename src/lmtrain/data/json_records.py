"""`.json` files of `data=text_files` that hold JSON lines: read as text, and said so once.

`data=text_files` reads only `.jsonl` / `.ndjson` files as records; any other file, `.json`
included, is one document of plain text, since code corpora hold real JSON files (package.json,
configs, fixtures) that are text to learn. A `.json` file of `{"text": ...}` lines is then trained
on with its field names, quotes and `\\n` escapes, where `data=hf_dataset` would read its records.
The same holds for a `.json` file of one array of records (`[{"text": ...}, ...]`), which
`data=hf_dataset` reads as rows; its first record is enough to tell, so only a file's start is read.
What is read does not change; a warning names the first such file and how many there are, so that
whoever meant records renames them to `.jsonl` (JSON lines) or reads them with `data=hf_dataset`.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal

from lmtrain.data.fix_commands import read_as, unused, word

log = logging.getLogger(__name__)

# The records' text field by default (data.source.text_field).
TEXT_FIELD = "text"
# Characters of a first line read at most: a longer line (minified JSON) is not looked at, so that
# a multi-GB one-line file costs no more than this.
MAX_LINE_CHARS = 1 << 20
# Characters of a file's start that say whether it opens an array of objects (`[` then `{`).
PEEK_CHARS = 256
ARRAY_OF_OBJECTS = re.compile(r"\s*\[\s*\{")
# The warnings given, by their message: a run fingerprints its source more than once.
_warned: set[str] = set()


def warn_json_lines(files: Iterable[Path]) -> None:
    """Warn once for the `.json` (or `.json.gz`) files among `files` that hold JSON lines, and
    once for those that hold one JSON array of records: both are read as plain text."""
    kinds = {path: _records_kind(path) for path in files if _is_json(path)}
    for kind in ("lines", "array"):
        found = [path for path, found_kind in kinds.items() if found_kind == kind]
        if found:
            _warn_once(_lines_message(found) if kind == "lines" else _array_message(found))


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def _others(found: list[Path]) -> str:
    more = len(found) - 1
    return f" (as do {more} more .json file{'s' if more > 1 else ''})" if more else ""


def _lines_message(found: list[Path]) -> str:
    return (
        f"{str(found[0])!r} holds JSON lines{_others(found)}, but data=text_files reads it as "
        "plain text, field names and escapes included (records come only from .jsonl and .ndjson "
        "files): rename it to .jsonl to train on its records' text"
    )


def _array_message(found: list[Path]) -> str:
    """The warning for arrays of records: renaming is not enough, a `.jsonl` holds one record a
    line; `jq -c '.[]'` writes that (to a new name: `>` would truncate a file already there)."""
    path = found[0]
    jsonl = unused(path.with_name(read_as(path.name)[0] + ".jsonl"), "records")  # a.json.gz: a
    reader = (
        "gzip -dc " + word(path) + " | jq -c '.[]'"
        if path.suffix.lower() == ".gz"
        else f"jq -c '.[]' {word(path)}"
    )
    return (
        f"{str(path)!r} holds a JSON array of records{_others(found)}, but data=text_files reads "
        "it as plain text, brackets, field names and escapes included: read its records as rows "
        f"with data=hf_dataset data.source.path={word(path)}, or write them as JSON lines "
        f"(`{reader} > {word(jsonl)}`) and pass that file instead"
    )


def _is_json(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith(".json")


def _records_kind(path: Path) -> Literal["lines", "array"] | None:
    """Whether the file holds JSON lines or one JSON array of records (see `_kind`), or neither;
    stat'ed so that a file unchanged since it was last looked at is not read again."""
    try:
        stat = path.stat()
    except OSError:
        return None  # reading it reports the problem
    return _kind(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def _kind(path: str, size: int, mtime_ns: int) -> Literal["lines", "array"] | None:
    """What the file holds: "array", an array whose first item is an object holding a string
    `text` field; "lines", JSON lines: its first non-empty line is a JSON object that holds a
    string `text` field, or that another line holding an object follows (never one JSON value).

    `size` and `mtime_ns` only key the cache. A pretty-printed object starts with a line `{`
    that does not parse; a minified one is a single line, an object with a `text` string rarely.
    A fixtures file of other objects (`[{"model": ...}]`) is text a code corpus means to hold.
    """
    try:
        with _open(Path(path)) as f:
            head = f.read(PEEK_CHARS)
            if ARRAY_OF_OBJECTS.match(head):
                start = head + f.read(MAX_LINE_CHARS - len(head))
                return "array" if _first_item_has_text(start) else None
            f.seek(0)
            first = _next_object(f)
            if first is None:
                return None
            if isinstance(first.get(TEXT_FIELD), str) or _next_object(f) is not None:
                return "lines"
            return None
    except (OSError, EOFError, zlib.error, ValueError, RecursionError):  # reading says it
        return None


def _first_item_has_text(head: str) -> bool:
    """Whether the array that `head` opens starts with an object holding a string `text` field;
    False if that object does not end within `head` (a record too long to look at)."""
    start = head.index("{")
    try:
        item, _ = json.JSONDecoder().raw_decode(head, start)
    except (ValueError, RecursionError):
        return False
    return isinstance(item, dict) and isinstance(item.get(TEXT_FIELD), str)


def _open(path: Path) -> IO[str]:
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")  # a byte order mark is no part of the JSON


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
