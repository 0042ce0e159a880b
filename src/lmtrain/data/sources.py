"""Corpus sources on local files: Python's standard library and your own text files.

Hydra instantiates one source from `data.source` (`_target_`); the token cache fingerprints its
`settings()` and `identity()` and streams its `documents()` (see `lmtrain.data.corpus`). Hugging
Face datasets are in `lmtrain.data.hf_dataset`, Tiny Shakespeare in `lmtrain.data.shakespeare`.

Splits are deterministic without a seed: several files split by file with a hash of the file's
relative path (a file never moves between train and val when others are added); one plain text file
splits by characters the way nanoGPT does (the tail is val); one `.jsonl` file splits by document.
"""

from __future__ import annotations

import glob
import math
import os
import sysconfig
from collections.abc import Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from lmtrain.data.corpus import (
    BLOCK_CHARS,
    Piece,
    Source,
    as_document,
    check_val_fraction,
    file_identity,
    is_record_file,
    is_val_file,
    is_val_index,
    read_records,
    read_text_pieces,
    split_single_text,
    take_bytes,
    text_document,
    text_size_hint,
)
from lmtrain.errors import LMTrainError

__all__ = ["FileSource", "PythonStdlibSource", "Source", "TextFilesSource", "is_val_file"]

STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def assign_splits(files: Sequence[Path], base: Path, val_fraction: float) -> list[str]:
    """Each file's split by path hash; one file moves over if that leaves a side empty.

    With a handful of files the hash can put all of them on one side, which would fail later with
    a less helpful "split too small" error, so the last file goes to val and the first to train.
    """
    val = [is_val_file(f.relative_to(base).as_posix(), val_fraction) for f in files]
    if len(files) > 1 and not any(val):
        val[-1] = True
    if len(files) > 1 and all(val):
        val[0] = False
    return ["val" if is_val else "train" for is_val in val]


class FileSource(Source):
    """A corpus of files: documents, identity, size and tokenizer sample from one file list.

    Subclasses say which files (`find_files`); the list is resolved once per instance, so the
    fingerprint and the tokens always describe the same files.
    """

    val_fraction: float
    text_field: str = "text"
    block_chars: int = BLOCK_CHARS
    _resolved: tuple[list[Path], Path] | None = None

    def find_files(self) -> tuple[list[Path], Path]:
        """The sorted, non-empty corpus files and the folder their relative paths start from."""
        raise NotImplementedError

    def file_list(self) -> tuple[list[Path], Path]:
        """`find_files()`, resolved on first use and then kept."""
        if self._resolved is None:
            self._resolved = self.find_files()
        return self._resolved

    def identity(self) -> dict[str, Any]:
        files, base = self.file_list()
        return {"base": str(base), "files": file_identity(files, base)}

    def size_hint(self) -> int:
        return sum(text_size_hint(f) for f in self.file_list()[0])

    def documents(self) -> Iterator[Piece]:
        files, base = self.file_list()
        if len(files) == 1 and is_record_file(files[0]):
            for index, text in enumerate(read_records(files[0], self.text_field)):
                split = "val" if is_val_index(index, self.val_fraction) else "train"
                yield from text_document(split, text, self.block_chars)
        elif len(files) == 1:
            yield from split_single_text(files[0], self.val_fraction, self.block_chars)
        else:
            splits = assign_splits(files, base, self.val_fraction)
            for path, split in zip(files, splits, strict=True):
                yield from self._file_documents(path, split)

    def _file_documents(self, path: Path, split: str) -> Iterator[Piece]:
        """A record file is one document per line; any other file is one document."""
        if is_record_file(path):
            for text in read_records(path, self.text_field):
                yield from text_document(split, text, self.block_chars)
        else:
            yield from as_document(split, read_text_pieces(path, self.block_chars))

    def sample(self, max_bytes: int) -> Iterator[str]:
        """Every k-th train file, so that about `max_bytes` are read instead of the whole corpus."""
        files, base = self.file_list()
        if len(files) == 1:
            yield from super().sample(max_bytes)
            return
        splits = assign_splits(files, base, self.val_fraction)
        train = [f for f, split in zip(files, splits, strict=True) if split == "train"]
        stride = max(1, math.ceil(sum(text_size_hint(f) for f in train) / max_bytes))
        pieces = chain.from_iterable(self._file_documents(f, "train") for f in train[::stride])
        yield from take_bytes((piece.text for piece in pieces), max_bytes)


class PythonStdlibSource(FileSource):
    """The `.py` files of the running interpreter's standard library: a corpus with no download.

    About 12 MB of code is enough to see a small model learn; tests are excluded because they are
    repetitive and would leak near-duplicates between train and val.
    """

    def __init__(self, val_fraction: float = 0.05) -> None:
        self.val_fraction = check_val_fraction(val_fraction)
        self.root = Path(sysconfig.get_paths()["stdlib"])

    def find_files(self) -> tuple[list[Path], Path]:
        files = sorted(
            p
            for p in self.root.rglob("*.py")
            if p.is_file()
            and p.stat().st_size > 0
            and not STDLIB_EXCLUDED_DIRS & set(p.relative_to(self.root).parts[:-1])
        )
        return files, self.root

    def settings(self) -> dict[str, Any]:
        return {"val_fraction": self.val_fraction}

    def describe(self) -> str:
        return f"Python stdlib .py files under {self.root} (val_fraction={self.val_fraction})"


class TextFilesSource(FileSource):
    """Your own UTF-8 text: files, folders (every file under them) or globs, one or a list.

    `.jsonl` / `.ndjson` files hold one document per line in `text_field`; any other file is one
    document; `.gz` is read through gzip (`notes.md.gz`, `part-0001.jsonl.gz`).
    """

    def __init__(
        self,
        path: str | Sequence[str],
        val_fraction: float = 0.1,
        text_field: str = "text",
        block_chars: int = BLOCK_CHARS,
    ) -> None:
        single = isinstance(path, str | os.PathLike)
        self.paths = [str(path)] if single else [str(p) for p in path]
        self.path = str(path) if single else ", ".join(self.paths)
        self.val_fraction = check_val_fraction(val_fraction)
        self.text_field = text_field
        self.block_chars = block_chars

    def find_files(self) -> tuple[list[Path], Path]:
        """Every matched file, sorted, deduplicated by real path (a file reached through two
        links, or a link loop a `**` glob walks, is read once and lands in one split); an error
        if none is found or all are empty. Absolute and relative paths in one list are all made
        absolute, so that the files have a common folder; a list of one kind is kept as given, so
        the relative paths that split the files stay what they were."""
        empty = [p for p in self.paths if not p.strip()]
        if empty or not self.paths:
            raise LMTrainError(
                f"data.source.path={self.path!r} is empty: pass a file, folder or glob (an empty "
                "path would read the whole working directory)"
            )
        found: dict[Path, Path] = {}  # real path -> the first path that reached it
        for entry in self.paths:
            path = Path(entry).expanduser()
            if path.is_file():
                matches = [path]
            elif path.is_dir():
                matches = sorted(p for p in path.rglob("*") if p.is_file())
            else:
                matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            for match in matches:
                if match.is_file():
                    found.setdefault(match.resolve(), match)
        files = sorted(found.values())
        if len({f.is_absolute() for f in files}) > 1:  # a list of /absolute and relative/ paths
            files = sorted(Path(os.path.abspath(f)) for f in files)
        if not files:
            raise LMTrainError(
                f"data.source.path={self.path!r} matches no file: pass an existing file, folder "
                "or glob"
            )
        files = [f for f in files if f.stat().st_size > 0]
        if not files:
            raise LMTrainError(
                f"data.source.path={self.path!r} matches only empty files: pass files with text"
            )
        unreadable = [f for f in files if not os.access(f, os.R_OK)]
        if unreadable:
            more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
            raise LMTrainError(
                f"{str(unreadable[0])!r}{more} under data.source.path={self.path!r} is not "
                "readable by this user (permission denied): make it readable (chmod a+r) or leave "
                "it out of data.source.path"
            )
        single_dir = Path(self.paths[0]).expanduser()
        if len(self.paths) == 1 and single_dir.is_dir():
            base = single_dir
        else:
            base = Path(os.path.commonpath([p.parent for p in files]))
        return files, base

    def settings(self) -> dict[str, Any]:
        return {
            "path": self.paths,
            "val_fraction": self.val_fraction,
            "text_field": self.text_field,
            "block_chars": self.block_chars,
        }

    def describe(self) -> str:
        return f"text files {self.path!r} (val_fraction={self.val_fraction})"
