"""Why a corpus file cannot be read, as one line that names the file (and the line, where known).

Readers fail in many ways that all mean "this file cannot be used": bytes that are not UTF-8, a
`.gz` file that is not gzip or was cut short, a damaged compressed stream, a file this user may not
read, a JSON, JSON-lines or parquet file that its parser refuses. Each becomes an `LMTrainError`
naming the file and what to do, raised where the file is read, so it surfaces the same way whether
a tokenizer is being trained (the Rust trainer re-raises its Python iterator's error) or the corpus
is being encoded (the parent process reads the documents; workers only encode). The token cache is
built in a temporary folder that is removed when anything fails, so nothing half-written remains.
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lmtrain.errors import LMTrainError, find_cause, first_line

LEAVE_OUT = "or leave it out of data.source.path"
# Where a tar member header holds its magic ("ustar"): archives pass as UTF-8 text otherwise.
TAR_MAGIC_OFFSET = 257
# What gzip raises for a file cut short, a damaged stream, or one that is not gzip at all.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


def conversion(name: str) -> str:
    """A command that converts the file `name` from latin-1 to UTF-8; through gzip for a `.gz`
    file (iconv on its compressed bytes would write garbage)."""
    if name.lower().endswith(".gz"):
        stem = name[: -len(".gz")]
        return f"zcat {name} | iconv -f latin1 -t utf-8 | gzip > {stem}.utf8.gz"
    return f"iconv -f latin1 -t utf-8 {name} > {name}.utf8"


@contextmanager
def reading(path: Path, position: Callable[[], str] | None = None) -> Iterator[None]:
    """Turn the errors of reading `path` into one-line LMTrainErrors.

    `position` says where reading was when it failed ("line 12"), for files read line by line.
    Non-UTF-8 text is refused rather than decoded with replacement characters: those would train
    the model on garbage silently. Its message gives the byte offset in the (uncompressed) file,
    found by a second pass only once reading has failed, since the decoder's offset is relative to
    the block it was given.
    """
    try:
        yield
    except UnicodeDecodeError as err:
        offset = first_invalid_utf8(path)
        where = f"byte {offset}" if offset is not None else f"byte {err.start} of a block"
        raise LMTrainError(
            f"{str(path)!r} is not UTF-8 text ({err.reason} at {where}): convert it, e.g. "
            f"`{conversion(path.name)}` with its real encoding, {LEAVE_OUT}"
        ) from None
    except PermissionError:
        raise LMTrainError(
            f"{str(path)!r} is not readable by this user (permission denied): make it readable "
            f"(chmod a+r) {LEAVE_OUT}"
        ) from None
    except GZIP_ERRORS as err:
        at = f" at {position()}" if position is not None else ""
        raise LMTrainError(f"{str(path)!r}{gzip_problem(err, at)}") from None
    except OSError as err:
        raise LMTrainError(
            f"{str(path)!r} could not be read ({err.strerror or first_line(err)}): check the "
            f"file and the disk, {LEAVE_OUT}"
        ) from None


def gzip_problem(err: BaseException, at: str = "") -> str:
    """What is wrong with a `.gz` file that gzip refused, and what to do (after its name)."""
    if isinstance(err, gzip.BadGzipFile) and str(err).startswith("Not a gzipped file"):
        return (
            f" is not gzip data although its name ends in .gz ({first_line(err)}): rename it "
            f"without .gz if it is plain text, {LEAVE_OUT}"
        )
    if isinstance(err, EOFError):
        return (
            f" ends{at} before the end of its gzip stream (cut short by an interrupted download "
            f"or copy?): fetch or compress it again, {LEAVE_OUT}"
        )
    return f" is damaged gzip data{at} ({first_line(err)}): fetch or compress it again, {LEAVE_OUT}"


def first_invalid_utf8(path: Path, block_bytes: int = 1 << 20) -> int | None:
    """The offset of the first byte of `path` (gunzipped for .gz) that is not valid UTF-8; None
    if there is none, or if the file cannot be read that far (a damaged .gz)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    fed = 0
    try:
        with opener(path, "rb") as f:
            while True:
                block = f.read(block_bytes)
                pending = len(decoder.getstate()[0])
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as err:
                    return fed - pending + err.start
                if not block:
                    return None
                fed += len(block)
    except (OSError, *GZIP_ERRORS):
        return None


def dataset_file_problem(err: BaseException) -> str | None:
    """What a format error in `err`'s chain says (a parser's or gzip's), or None if there is none.

    `datasets` wraps them (a DatasetGenerationError around pyarrow's ArrowInvalid, gzip's
    EOFError) or, streaming, lets them through as they are.
    """
    import pyarrow

    for kind in (pyarrow.ArrowException, *GZIP_ERRORS):
        cause = find_cause(err, kind)
        if cause is not None:
            if isinstance(cause, GZIP_ERRORS):
                return gzip_problem(cause)
            return (
                f" could not be parsed ({first_line(cause)}): fix or re-create the file, "
                f"{LEAVE_OUT}"
            )
    return None


def dataset_read_problem(err: BaseException) -> str | None:
    """What went wrong reading a `data=hf_dataset` split, as the end of a line that begins with
    the file (or None: not the data's fault): not UTF-8, no rows (an empty file: a StopIteration
    where datasets reads a first row for the columns, or, for a split of its own such as an empty
    `validation.jsonl`, its "corresponds to no data"), or a format error."""
    decode_error = find_cause(err, UnicodeDecodeError)
    if decode_error is not None:
        return (
            f" is not UTF-8 text ({decode_error.reason}): convert the files to UTF-8 "
            "(iconv -f <encoding> -t utf-8), or for text/csv files pass their encoding, "
            "e.g. data.source.load_kwargs={encoding:latin-1}"
        )
    empty = find_cause(err, StopIteration) is not None
    if empty or (isinstance(err, ValueError) and "corresponds to no data" in str(err)):
        return (
            " holds no rows (an empty file?): pass files with text, or leave it out of "
            "data.source.path"
        )
    return dataset_file_problem(err)


def check_not_archive(path: Path) -> None:
    """Refuse a tar archive (plain or gzipped) given as a text file.

    A tar header is ASCII and NUL bytes, valid UTF-8, so without this a `tar czf corpus.gz dir`
    trains on headers and padding, silently.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(TAR_MAGIC_OFFSET + 5)
    except (OSError, *GZIP_ERRORS):
        return  # the read itself reports it
    if head[TAR_MAGIC_OFFSET:].startswith(b"ustar"):
        raise LMTrainError(
            f"{str(path)!r} is a tar archive, not text: extract it (tar xf {path.name}) and pass "
            f"the extracted folder, {LEAVE_OUT}"
        )
