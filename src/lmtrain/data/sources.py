"""Corpus sources on local files: Python's standard library and your own text files.

Hydra instantiates one source from `data.source` (`_target_`); the token cache fingerprints its
`settings()` and `identity()` and streams its `documents()` (see `lmtrain.data.corpus`). Hugging
Face datasets are in `lmtrain.data.hf_dataset`, Tiny Shakespeare in `lmtrain.data.shakespeare`.

Splits are deterministic without a seed: several files split by file with a hash of each file's path
under the argument that found it (a folder's path, a glob's fixed prefix, a file's own name), so a
file never moves between train and val when other files or paths are added; one plain text file
splits by characters the way nanoGPT does (the tail is val); one `.jsonl` file splits by document.

Folders a run writes into (the token cache, run folders: `Source.leave_out`) are never corpus text,
whichever form (folder, glob, file) reached them.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import sysconfig
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from lmtrain.data.corpus import (
    BLOCK_CHARS,
    Piece,
    Source,
    as_document,
    check_block_chars,
    check_val_fraction,
    file_hash,
    file_identity,
    is_record_file,
    is_val_file,
    is_val_index,
    read_text_pieces,
    split_single_text,
    take_bytes,
    text_document,
    text_size_hint,
)
from lmtrain.data.file_walk import (
    corpus_paths,
    glob_root,
    lmtrain_folder,
    refuse_unreadable,
    same_file_key,
    unusable_entry,
    walk_files,
    warn_overlaps,
)
from lmtrain.data.records import read_records, text_field_setting
from lmtrain.data.split_balance import warn_lopsided_split
from lmtrain.errors import LMTrainError, MissingCorpusError

log = logging.getLogger(__name__)

__all__ = ["FileSource", "PythonStdlibSource", "Source", "TextFilesSource", "is_val_file"]

STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})


def assign_splits(
    files: Sequence[Path], roots: Path | Sequence[Path], val_fraction: float
) -> list[str]:
    """Each file's split by a hash of its path under its root (one root for all files, or one per
    file); one file moves over if that leaves a side empty.

    With a handful of files the hash can put all of them on one side, which would fail later with
    a less helpful "split too small" error, so the file of the lowest hash goes to val (of the
    highest, to train). Chosen by hash, not by name: a file added later takes its place only if
    its own hash is lower (last by name, any file named after it did).
    """
    per_file = [roots] * len(files) if isinstance(roots, Path) else roots
    keys = [f.relative_to(root).as_posix() for f, root in zip(files, per_file, strict=True)]
    val = [is_val_file(key, val_fraction) for key in keys]
    order = sorted(range(len(keys)), key=lambda i: (file_hash(keys[i]), keys[i]))
    if len(files) > 1 and not any(val):
        val[order[0]] = True
    if len(files) > 1 and all(val):
        val[order[-1]] = False
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

    def leave_out(self, folders: Mapping[str, str | os.PathLike[str]]) -> None:
        super().leave_out(folders)
        self._resolved = None  # found before the folders were known: find again

    def split_roots(self) -> list[Path]:
        """The folder each file's split hash starts from (one per file of `file_list()`)."""
        files, base = self.file_list()
        return [base] * len(files)

    def file_splits(self) -> list[str]:
        """Each file's split, "train" or "val", in the order of `file_list()`."""
        return assign_splits(self.file_list()[0], self.split_roots(), self.val_fraction)

    def identity(self) -> dict[str, Any]:
        files, base = self.file_list()
        return {"base": str(base), "files": file_identity(files, base)}

    def size_hint(self) -> int:
        return sum(text_size_hint(f) for f in self.file_list()[0])

    def documents(self) -> Iterator[Piece]:
        files = self.file_list()[0]
        if len(files) == 1 and is_record_file(files[0]):
            for index, text in enumerate(read_records(files[0], self.text_field)):
                split = "val" if is_val_index(index, self.val_fraction) else "train"
                yield from text_document(split, text, self.block_chars)
        elif len(files) == 1:
            yield from split_single_text(files[0], self.val_fraction, self.block_chars)
        else:
            splits = self.file_splits()
            warn_lopsided_split(files, splits, self.val_fraction)
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
        files = self.file_list()[0]
        if len(files) == 1:
            yield from super().sample(max_bytes)
            return
        train = [f for f, split in zip(files, self.file_splits(), strict=True) if split == "train"]
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
        self.paths = corpus_paths(path)
        self.path = ", ".join(self.paths)  # for messages
        self.val_fraction = check_val_fraction(val_fraction)
        self.text_field = text_field_setting(text_field)
        self.block_chars = check_block_chars(block_chars)

    def find_files(self) -> tuple[list[Path], Path]:
        """Every matched file, sorted, each read once (one reached by two names or links, hard
        ones too, or a link loop a `**` glob walks, lands in one split); an error if none is found
        or all are empty. Absolute and relative paths in one list are all made absolute (a common
        folder); a list of one kind is kept as given (the fingerprint's relative paths stay)."""
        empty = [p for p in self.paths if not p.strip()]
        if empty or not self.paths:
            raise LMTrainError(
                f"data.source.path={self.path!r} is empty: pass a file, folder or glob (an empty "
                "path would read the whole working directory)"
            )
        found: dict[Any, tuple[Path, Path]] = {}  # same_file_key -> (first path to it, root)
        left_out: dict[str, int] = {}
        written: dict[Path, None] = {}  # lmtrain's own folders under the corpus paths
        kinds: dict[Path, str | None] = {}
        overlaps: dict[tuple[Path, Path], int] = {}  # (first root, later root): files both reach
        for entry in self.paths:
            path = Path(entry).expanduser()
            if path.is_file():
                root, matches = path.parent, [path]
            elif path.is_dir():
                root, matches = path, walk_files(path, self.path)
            else:
                root = glob_root(path)
                matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
            if not matches and len(self.paths) > 1:  # the rest would train, this one silently not
                raise MissingCorpusError(
                    entry,
                    f"data.source.path={self.path!r}: {entry!r} matches no file: fix or drop it "
                    "from the list",
                )
            for match in sorted(matches, key=lambda p: (len(p.parts), p)):  # shortest name wins
                real = match.resolve()
                setting = self.left_out_by(real, root)
                ours = lmtrain_folder(match, root, kinds) if setting is None else None
                if setting is not None:
                    left_out[setting] = left_out.get(setting, 0) + 1
                elif ours is not None:
                    written[ours] = None
                elif match.is_file():
                    first = found.setdefault(same_file_key(match), (match, root))[1]
                    if os.path.abspath(first) != os.path.abspath(root):
                        overlaps[first, root] = overlaps.get((first, root), 0) + 1
                elif (problem := unusable_entry(match, self.path)) is not None:
                    raise problem
        warn_overlaps(overlaps, self.path)
        for setting, count in left_out.items():
            log.info(
                "Left %d files under %s=%s out of the corpus (a run writes there)",
                count,
                setting,
                self._left_out[setting],
            )
        if written:  # another cache_dir's or log_dir's: read, they trained as text
            log.warning(
                "Left out of the corpus what lmtrain wrote under data.source.path (token caches, "
                "runs, sweeps): %s",
                ", ".join(map(str, written)),
            )
        chosen = sorted(found.values())
        if len({f.is_absolute() for f, _ in chosen}) > 1:  # a list of /absolute and relative/ paths
            chosen = sorted((Path(os.path.abspath(f)), Path(os.path.abspath(r))) for f, r in chosen)
        if not chosen and left_out:  # data.cache_dir=<the corpus folder>, say
            raise LMTrainError(
                f"data.source.path={self.path!r} holds no files but those under "
                f"{', '.join(left_out)}, which runs write into: pass a corpus apart from them"
            )
        if not chosen:
            raise MissingCorpusError(
                str(self.path),
                f"data.source.path={self.path!r} matches no file: pass an existing file, folder "
                "or glob",
            )
        chosen = [(f, root) for f, root in chosen if f.stat().st_size > 0]
        if not chosen:
            raise LMTrainError(
                f"data.source.path={self.path!r} matches only empty files: pass files with text"
            )
        files = [f for f, _ in chosen]
        refuse_unreadable(files, self.path)
        self._roots = [root for _, root in chosen]
        single_dir = Path(self.paths[0]).expanduser()
        if len(self.paths) == 1 and single_dir.is_dir():
            base = single_dir
        else:
            base = Path(os.path.commonpath([p.parent for p in files]))
        return files, base

    def split_roots(self) -> list[Path]:
        """Per file, the root of the argument that found it: its folder, its glob's fixed prefix,
        or (a file named itself) its own folder, so the hash covers its name alone. Adding other
        paths changes no file's root, so no file moves between train and val."""
        self.file_list()
        return self._roots

    def settings(self) -> dict[str, Any]:
        return {
            "path": self.paths,
            "val_fraction": self.val_fraction,
            "text_field": self.text_field,
            "block_chars": self.block_chars,
            # Files split by their path under their own argument, a forced val file by its hash
            # (it was the last by name); caches of the earlier rules are not reused.
            "file_split": "path under its argument; a forced val file: the lowest hash",
        }

    def describe(self) -> str:
        return f"text files {self.path!r} (val_fraction={self.val_fraction})"
