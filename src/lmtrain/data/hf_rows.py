"""What each row of a `data=hf_dataset` text column must hold to be a document: text.

A JSON record without the field, or a null in parquet, holds none; numbers or lists of words are
not text, and are not guessed at. A NUL character is never in text: a UTF-16 file without a byte
order mark, read as the UTF-8 that its ASCII bytes pass for, gave rows of NUL-separated letters
that trained without a word. `data=text_files` refuses such a file (`read_errors`); here a row
refuses it, naming the file where one local text file holds the NUL byte, else the row.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

from lmtrain.data.hf_local import compression_suffix
from lmtrain.data.read_errors import first_nul, nul_error
from lmtrain.errors import LMTrainError

# The builders that read files as text: a NUL byte in one of their files is a NUL in a row.
TEXT_BUILDERS = ("text", "json", "csv")


def check_text_rows(
    texts: Sequence[Any],
    first: int,
    split: str,
    column: str,
    path: str,
    text_files: Callable[[], Sequence[str]],
) -> None:
    """Raise LMTrainError for the first row of a batch (`texts`, rows `first`... of `split`,
    from `column` of data.source.path=`path`) that holds no text, not text, or a NUL character.

    `text_files` lists the local files the split reads as text; they are searched for a NUL
    byte only once a row holds one. The search for a NUL runs in C, a row at a time, so the
    rows that pass cost next to nothing.
    """
    where = f"data.source.path={path!r}: row"
    if None in texts:  # a JSON record without the field, a null in parquet
        raise LMTrainError(
            f"{where} {first + texts.index(None)} (from 0) of split {split!r} has no text "
            f"({column!r} is null or missing): fill or drop such rows, or set "
            "data.source.text_column to the column that holds the text"
        )
    wrong = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong is not None:  # numbers, lists of words: not text, and not to be guessed at
        raise LMTrainError(
            f"{where} {first + wrong} (from 0) of split {split!r} holds "
            f"{type(texts[wrong]).__name__}, not text, in {column!r}: set "
            "data.source.text_column to a column of strings, or convert the column to strings"
        )
    if not any(map(operator.contains, texts, repeat("\x00"))):
        return
    for file in text_files():
        local = Path(file)
        if compression_suffix(local.name) in ("", ".gz"):  # others: compressed bytes hold NULs
            offset = first_nul(local)
            if offset is not None:
                raise nul_error(local, offset)
    row = next(i for i, text in enumerate(texts) if "\x00" in text)
    raise LMTrainError(
        f"{where} {first + row} (from 0) of split {split!r} holds a NUL character in {column!r} "
        f"(at character {texts[row].index(chr(0))}), which text never holds: it is binary data, "
        "or UTF-16/UTF-32 text read as UTF-8: convert the data to UTF-8 (`iconv -f utf-16le "
        "-t utf-8` for UTF-16 text), or clean or drop such rows"
    )
