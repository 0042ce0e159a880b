"""JSON-lines corpus files (`.jsonl`, `.ndjson`, gzipped or not): one document per line.

Each line is a JSON object whose `text_field` holds the document; blank lines are skipped. A line
that is not JSON, has no string in that field, or holds a NUL or half of a UTF-16 surrogate pair
is one `error:` line naming the file and the line, never a document silently dropped or mangled.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lmtrain.data.corpus import open_text
from lmtrain.data.read_errors import reading
from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.checks import setting_text


def text_field_setting(text_field: Any) -> str:
    """`data.source.text_field` as text: `text_field=5` is the field named 5 (JSON keys are
    text); a list or a mapping is one line."""
    what = "the name of the field that holds the text"
    return str(setting_text("data.source.text_field", text_field, what, required=True))


def read_records(path: Path, text_field: str) -> Iterator[str]:
    """The `text_field` of each JSON line; blank lines are skipped, broken ones are errors."""
    line_number = 0
    with reading(path, lambda: f"line {line_number + 1}"), open_text(path) as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except (ValueError, RecursionError) as err:  # also: nested too deep, huge numbers
                problem = f"cannot be read as JSON ({first_line(err)})"
                if isinstance(err, json.JSONDecodeError):
                    # json's messages end in "at" (its own text adds ": line 1 column N").
                    where = f"{err.msg.removesuffix(' at')} at column {err.colno}"
                    problem = f"is not valid JSON ({where})"
                raise LMTrainError(
                    f"{path}:{line_number} {problem}: fix the line or remove the file from "
                    "data.source.path"
                ) from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise LMTrainError(
                    f"{path}:{line_number} has no string field {text_field!r}: set "
                    "data.source.text_field to the field that holds the text"
                )
            if ("\\ud" in line or "\\uD" in line) and _lone_surrogate(text):
                raise LMTrainError(
                    f"{path}:{line_number} has a lone surrogate escape (\\ud800 to \\udfff) in "
                    f"{text_field!r}, half of a character: fix the line or remove the file from "
                    "data.source.path"
                )
            if "\\u0000" in line and "\x00" in text:  # as a NUL byte is in any other file
                raise LMTrainError(
                    f"{path}:{line_number} has a NUL character (\\u0000) in {text_field!r}, "
                    "which text never holds (binary data, or UTF-16 text read as UTF-8): clean "
                    "the line or remove the file from data.source.path"
                )
            yield text


def _lone_surrogate(text: str) -> bool:
    """Whether `text` holds half of a UTF-16 pair (JSON can escape one; UTF-8 cannot encode it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
