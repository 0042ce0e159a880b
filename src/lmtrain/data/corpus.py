"""What every corpus source shares: documents as a lazy stream of pieces, split rules, file reading.

A source yields `Piece`s in a fixed order, each tagged with its split; a document is one or more
consecutive pieces of the same split, and an end-of-text token follows its last piece (`end`).
Nothing holds the corpus in memory: a huge file is read in blocks of about `BLOCK_CHARS`
characters, cut just after a newline that sits between two non-space characters, or where four
blocks hold none, before a space or other whitespace that follows a non-space (`piece_cuts`).
Byte-level BPE (GPT-2's pre-tokenizer regex) and the char tokenizer always break tokens there, so
encoding the pieces one by one gives exactly the ids of encoding the whole file; `corpus_tokenizer`
re-cuts them for tokenizers that break tokens elsewhere (SentencePiece-style ones, before a space).
Text with no such place in four blocks is cut where it is, and counted in one warning.

Splits never need a second pass or a random seed: files go to val by a hash of their relative path,
documents of one record file (or one HF dataset split) by a hash of their index, and a single plain
text file by characters, nanoGPT's way (the tail is val).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

from lmtrain.data.json_records import warn_json_lines
from lmtrain.data.piece_cuts import cut_pieces
from lmtrain.data.piece_cuts import last_cut as last_cut  # re-exported
from lmtrain.data.read_errors import check_not_archive, reading, refuse_nul
from lmtrain.data.read_errors import first_invalid_utf8 as first_invalid_utf8  # re-exported
from lmtrain.utils.checks import Problems

SPLITS = ("train", "val")
# Characters per piece of a big document: big enough that cuts are rare, small enough that a
# multi-GB file never sits in memory and that encoding one piece stays cheap (~25 MB).
BLOCK_CHARS = 1 << 18
MB = 1_000_000
# Files whose lines are JSON records (one document each), with or without .gz.
RECORD_SUFFIXES = (".jsonl", ".ndjson")


class Piece(NamedTuple):
    """A run of text from one document; `end` marks the document's last piece."""

    split: str
    text: str
    end: bool


def utf8_len(text: str) -> int:
    """UTF-8 size of `text`, without encoding it when it is ASCII (the common, much faster case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def check_val_fraction(val_fraction: float) -> float:
    """Reject fractions that would leave train or val empty by construction: every source holds
    out a share of its text for val, so 0 and 1 mean the same nonsense for all of them."""
    problems = Problems()
    problems.number(
        "data.source.val_fraction", val_fraction, low=0, high=1, low_open=True, high_open=True
    )
    problems.raise_if_any()
    return float(val_fraction)


def check_block_chars(block_chars: Any) -> int:
    """A whole number of characters per piece: `block_chars=abc` was a TypeError in the middle
    of reading, and 0 read every document as empty (then `the corpus is empty`)."""
    problems = Problems()
    problems.integer("data.source.block_chars", block_chars, 1)
    problems.raise_if_any()
    return int(block_chars)


def is_val_file(relative_path: str, val_fraction: float) -> bool:
    """Whether a file belongs to val: a stable hash of its relative path, not a random draw."""
    return file_hash(relative_path) < val_fraction * 10_000


def file_hash(relative_path: str) -> int:
    """A file's place in [0, 10000): below `val_fraction * 10000` is val; any name's bytes."""
    return zlib.crc32(relative_path.encode("utf-8", "surrogateescape")) % 10_000


def is_val_index(index: int, val_fraction: float) -> bool:
    """Whether the `index`-th document of a record stream belongs to val: streaming-friendly."""
    return zlib.crc32(index.to_bytes(8, "little")) % 10_000 < val_fraction * 10_000


class Source:
    """Base of the corpus sources that Hydra instantiates from `data.source`.

    Subclasses implement `documents()`, `identity()`, `settings()` and `describe()`; the token cache
    fingerprints `settings()` and `identity()` (cheap: file stats or a dataset's own fingerprint,
    never the text), so each must change whenever the documents could. A subclass that inherits
    `settings()` gets its own new constructor arguments fingerprinted too, as given.
    """

    _left_out: Mapping[str, Path] = {}  # replaced by leave_out, never mutated
    _given: tuple[tuple[Any, ...], dict[str, Any]] = ((), {})  # set by __new__, never mutated
    typed_as = "data.source"  # how its settings are typed in advice; lmtrain.eval: +data.source

    def __new__(cls, *args: Any, **kwargs: Any) -> Source:
        """Keep the constructor's arguments: the fingerprint adds those a subclass takes that its
        inherited `settings()` cannot know of (`token_cache.unsettled_arguments`)."""
        source = super().__new__(cls)
        source._given = (args, dict(kwargs))
        return source

    def leave_out(self, folders: Mapping[str, str | os.PathLike[str]]) -> None:
        """Folders a run writes into, by the setting that names them (`data.cache_dir`,
        `paths.log_dir`): never corpus text, though a corpus folder may hold them
        (`data.source.path=data` holds the default cache). Read, a cache's files or a run's logs
        and checkpoints would join the corpus and grow it on every run."""
        added = {key: Path(path).expanduser().resolve() for key, path in folders.items()}
        self._left_out = {**self._left_out, **added}

    def left_out_by(self, real_path: Path, root: Path) -> str | None:
        """The setting whose left-out folder holds `real_path` (a resolved path) and lies inside
        `root`, the folder it was found under, or None. A corpus folder that is itself inside
        the cache folder (`data.cache_dir=<a parent of the text>`) is read as usual."""
        inside = root.expanduser().resolve()
        return next(
            (
                k
                for k, f in self._left_out.items()
                if real_path.is_relative_to(f) and f.is_relative_to(inside)
            ),
            None,
        )

    def more_text_hint(self, split: str, documents: int) -> str:
        """What to change so that `split` gets more tokens, given the corpus's document count.

        Moving the train/val boundary cannot help a corpus of one document split by document.
        """
        if documents < 2:
            return "pass a corpus of several documents (one document goes to train or val whole)"
        change = "lowering" if split == "train" else "raising"
        return f"try {change} data.source.val_fraction"

    def documents(self) -> Iterator[Piece]:
        """Every piece of every document, train and val interleaved, in a deterministic order."""
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What identifies the data itself (file paths, sizes and mtimes; a dataset revision)."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The constructor arguments that shape the documents or the split."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def size_hint(self) -> int | None:
        """About how many bytes of text `documents()` yields, for progress and sampling; or None."""
        return None

    def sample(self, max_bytes: int) -> Iterator[str]:
        """About `max_bytes` of train text spread over the corpus, for training a tokenizer.

        With a size hint every k-th train piece is taken (k = hint / max_bytes), else the first
        `max_bytes`; either way it stops once `max_bytes` are taken. File sources override this to
        skip whole files instead of reading them.
        """
        hint = self.size_hint()
        stride = max(1, math.ceil(hint / max_bytes)) if hint else 1
        train = (piece for piece in self.documents() if piece.split == "train")
        yield from take_bytes((p.text for i, p in enumerate(train) if i % stride == 0), max_bytes)


def take_bytes(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    taken = 0
    for text in texts:
        if taken >= max_bytes:
            return
        taken += utf8_len(text)
        yield text


def file_identity(files: Iterable[Path], base: Path) -> list[list[Any]]:
    """[relative path, size, mtime_ns] per file: what changes when a file is edited or replaced.

    Cheaper than hashing contents by the size of the corpus; a file rewritten with the same size
    and the same mtime (copied with `cp -p`, say) is not noticed: delete its cache folder then.
    Here, before any text is read, `.json` files of JSON lines are named in a warning.
    """
    files = list(files)
    warn_json_lines(files)
    rows = []
    for path in files:
        stat = path.stat()
        rows.append([path.relative_to(base).as_posix(), stat.st_size, stat.st_mtime_ns])
    return rows


def text_size_hint(path: Path) -> int:
    """The file's size; for .gz, the uncompressed size gzip stores at its end (modulo 4 GiB)."""
    size = path.stat().st_size
    if path.suffix.lower() != ".gz" or size < 18:
        return size
    with path.open("rb") as f:
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def is_record_file(path: Path) -> bool:
    """`.jsonl` / `.ndjson`, optionally gzipped, in any case (`.JSONL`): one JSON document per
    line."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(RECORD_SUFFIXES)


def open_text(path: Path) -> IO[str]:
    """UTF-8 text, gunzipped on the fly for `.gz`; newlines normalized to \\n like `read_text`;
    a leading byte order mark dropped (`utf-8-sig`; kept, it was a U+FEFF in the vocabulary)."""
    check_not_archive(path)
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open(encoding="utf-8-sig")


def read_text_blocks(path: Path, block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """The file's text in blocks of `block_chars` characters as read, not cut; no NUL."""
    with reading(path), open_text(path) as f:
        yield from refuse_nul(path, iter(partial(f.read, block_chars), ""))


def read_text_pieces(path: Path, block_chars: int = BLOCK_CHARS) -> Iterator[str]:
    """The file's text in pieces of about `block_chars` characters (see `cut_pieces`), no NUL."""
    yield from cut_pieces(read_text_blocks(path, block_chars), block_chars)


def as_document(split: str, pieces: Iterable[str]) -> Iterator[Piece]:
    """Tag the pieces of one document with its split and `end` on the last (none: no document)."""
    previous: str | None = None
    for piece in pieces:
        if previous is not None:
            yield Piece(split, previous, False)
        previous = piece
    if previous is not None:
        yield Piece(split, previous, True)


def text_document(split: str, text: str, block_chars: int = BLOCK_CHARS) -> Iterator[Piece]:
    """One in-memory document as pieces: long ones are cut so that encoding stays bounded."""
    if len(text) <= block_chars:
        if text:
            yield Piece(split, text, True)
        return
    blocks = (text[i : i + block_chars] for i in range(0, len(text), block_chars))
    yield from as_document(split, cut_pieces(blocks, block_chars))


def split_single_text(path: Path, val_fraction: float, block_chars: int) -> Iterator[Piece]:
    """nanoGPT's split of one text file: the first (1 - val_fraction) of its characters train.

    The characters are counted in a first streaming pass, so the cut is the same as on the whole
    text in memory while memory stays at one block. That pass reads blocks, not cut pieces:
    cutting adds no characters, and a forced cut would be counted for both passes.
    """
    n_chars = sum(len(block) for block in read_text_blocks(path, block_chars))
    cut = int(n_chars * (1.0 - val_fraction))
    position = 0
    for piece in read_text_pieces(path, block_chars):
        start, position = position, position + len(piece)
        if position <= cut:
            yield Piece("train", piece, position == cut)
        elif start >= cut:
            yield Piece("val", piece, position == n_chars)
        else:
            yield Piece("train", piece[: cut - start], True)
            yield Piece("val", piece[cut - start :], position == n_chars)
