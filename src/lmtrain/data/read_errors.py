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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

from lmtrain.data.file_walk import VERSION_CONTROL
from lmtrain.data.fix_commands import conversion, decompress, extract, move_out, rename_gz, word
from lmtrain.errors import LMTrainError, find_cause, first_line

LEAVE_OUT = "or leave it out of data.source.path"
# Where a tar member header holds its magic ("ustar"): archives pass as UTF-8 text otherwise.
TAR_MAGIC_OFFSET = 257
# Bytes of a file's start searched for a NUL byte, as git and grep do to tell binary from text.
HEAD_BYTES = 8192
# What gzip raises for a file cut short, a damaged stream, or one that is not gzip at all.
GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)


# What a file's first bytes say it is when it is not UTF-8 text: (magic, what it is, the command
# that fixes it, made from the file's path by fix_commands, what to do around {command}/{path}).
# Compressed data decodes as garbage or fails as "not UTF-8", and iconv from latin-1 on it would
# write garbage; gzip is read as such only under a .gz name.
COMPRESSED: tuple[tuple[bytes, str, Callable[[Path], str] | None, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data but its name does not end in .gz", rename_gz,
     "rename it to end in .gz ({command}) so that it is read through gzip"),
    (b"\xfd7zXZ\x00", "xz-compressed data, not text", partial(decompress, "xz -dc"),
     "decompress it ({command}), then move {path} out of the corpus"),
    (b"BZh", "bzip2-compressed data, not text", partial(decompress, "bunzip2 -c"),
     "decompress it ({command}), then move {path} out of the corpus"),
    (b"PK\x03\x04", "a zip archive, not text", partial(extract, zip_archive=True),
     "extract it ({command}) and pass the extracted folder"),
    (b"PK\x05\x06", "an empty zip archive, not text", None, "delete it"),
    (b"(\xb5/\xfd", "zstd-compressed data, not text", partial(decompress, "zstd -dc"),
     "decompress it ({command}), then move {path} out of the corpus"),
)  # fmt: skip
# bzip2's first block or end-of-stream marker after "BZh" and a level digit: text may start "BZh".
BZIP2_MARKS = (b"1AY&SY", b"\x17rE8P\x90")
# Byte order marks, UTF-32's first (its little-endian mark starts as UTF-16's): (mark, encoding).
BYTE_ORDER_MARKS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


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
            f"`{conversion(path)}` with its real encoding, {move_out(path)}, {LEAVE_OUT}"
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
    columns = columns_problem(err)
    if columns is not None:
        return columns
    empty = find_cause(err, StopIteration) is not None
    if empty or (isinstance(err, ValueError) and "corresponds to no data" in str(err)):
        return (
            " holds no rows (an empty file?): pass files with text, or leave it out of "
            "data.source.path"
        )
    return dataset_file_problem(err)


def columns_problem(err: BaseException) -> str | None:
    """What a `datasets` CastError in `err`'s chain says, or None: the json/csv builders take the
    columns of the first file (or rows) they read and cannot cast a later one with others to
    them. Raised as it is when streaming, wrapped in a DatasetGenerationError when not."""
    from datasets.table import CastError

    cast = find_cause(err, CastError)
    if cast is None:
        return None
    found = list(getattr(cast, "table_column_names", None) or [])
    expected = list(getattr(cast, "requested_column_names", None) or [])
    if not found or sorted(found) == sorted(expected):  # same names, other types
        differ = "on their columns' types"
    else:
        differ = (
            f"on their columns (one has {', '.join(map(str, found))}; the first read has "
            f"{', '.join(map(str, expected))})"
        )
    return (
        f" holds files (or rows) that disagree {differ}, which datasets cannot read as one "
        "table: give every file the same columns, or pick the files that share them with "
        "data.source.data_files=<files or glob>"
    )


def check_not_archive(path: Path) -> None:
    """Refuse a file (gunzipped for .gz) whose first bytes say it is not UTF-8 text: a tar
    archive, compressed data, UTF-16 or UTF-32 text, or (a NUL byte) binary data or UTF-16/32
    text without a byte order mark.

    A tar header is ASCII and NUL bytes, valid UTF-8, so without this a `tar czf corpus.gz dir`
    trains on headers and padding, silently. The others fail to decode (a zip of stored text may
    not), and "not UTF-8 text" would suggest converting from latin-1: garbage, written to disk.
    NUL is valid UTF-8 too: a `.bin` of token ids or UTF-16 text decoded as text, silently.
    """
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(TAR_MAGIC_OFFSET + 5)
            with suppress(OSError, *GZIP_ERRORS):  # a .gz cut short: its first bytes still tell
                head += f.read(HEAD_BYTES - len(head))
    except (OSError, *GZIP_ERRORS):
        return  # the read itself reports it
    if head[TAR_MAGIC_OFFSET:].startswith(b"ustar"):
        raise LMTrainError(
            f"{str(path)!r} is a tar archive, not text: extract it ({extract(path)}) and pass "
            f"the extracted folder, {LEAVE_OUT}"
        )
    problem = not_text_problem(head, path)
    if problem is not None:
        raise LMTrainError(f"{str(path)!r}{problem}")
    if b"\x00" in head:
        raise nul_error(path, head.index(b"\x00"))


def refuse_nul(path: Path, blocks: Iterable[str]) -> Iterator[str]:
    """The text blocks read from `path`, refused at the first that holds a NUL character (past
    the start `check_not_archive` searched): binary data or UTF-16/32 text, not UTF-8 text."""
    for block in blocks:
        if "\x00" in block:
            raise nul_error(path, first_nul(path))
        yield block


def first_nul(path: Path, block_bytes: int = 1 << 20) -> int | None:
    """The offset of the first NUL byte of `path` (gunzipped for .gz), or None if there is none
    or the file cannot be read that far; searched only once a NUL was found in its text."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    fed = 0
    with suppress(OSError, *GZIP_ERRORS), opener(path, "rb") as f:
        while block := f.read(block_bytes):
            if (at := block.find(b"\x00")) >= 0:
                return fed + at
            fed += len(block)
    return None


def nul_error(path: Path, offset: int | None) -> LMTrainError:
    """One line for a file that holds a NUL byte (at `offset`, where known): never in text.

    A file inside a version-control folder is read only where data.source.path names that
    folder or a path in it (a walk leaves them out): never advise removing it (`.git/index`)."""
    at = f" at byte {offset}" if offset is not None else ""
    store = next((part for part in path.parts if part in VERSION_CONTROL), None)
    if store is not None:
        return LMTrainError(
            f"{str(path)!r} holds a NUL byte{at}: it is a file of version control's own {store} "
            f"folder, not corpus text: keep it, and point data.source.path at the corpus's "
            f"files instead (a folder holding {store} leaves it out)"
        )
    return LMTrainError(
        f"{str(path)!r} holds a NUL byte{at}: it is binary data, or UTF-16/UTF-32 text without "
        "a byte order mark, not UTF-8 text: if it is UTF-16 text convert it, e.g. "
        f"`{conversion(path, 'utf-16le')}`, {move_out(path)}, else remove it or narrow "
        "data.source.path (a glob such as '*.txt') to leave it out"
    )


def not_text_problem(head: bytes, path: Path) -> str | None:
    """What the first bytes `head` of the file `path` say it is instead of UTF-8 text, and what
    to do (after its name); None if they say nothing."""
    for magic, what, command, fix in COMPRESSED:
        if head.startswith(magic):
            if magic == b"BZh" and not head[4:10].startswith(BZIP2_MARKS):
                continue
            if magic == b"\x1f\x8b" and path.name.lower().endswith(".gz"):
                continue  # read through gzip: compressed twice, or named .gz.gz; gzip says
            done = fix.format(command=command(path) if command else "", path=word(path))
            return f" is {what}: {done}, {LEAVE_OUT}"
    for mark, encoding in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return (
                f" is {encoding.upper()} text (it starts with a {encoding.upper()} byte order "
                f"mark), not UTF-8: convert it, e.g. `{conversion(path, encoding)}`, "
                f"{move_out(path)}, {LEAVE_OUT}"
            )
    return None
