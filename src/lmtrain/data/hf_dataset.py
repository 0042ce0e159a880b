"""A Hugging Face dataset as a corpus: a hub name, a local folder, or json/jsonl/parquet/text files.

Everything goes through `datasets.load_dataset`, so any format and any hub dataset it reads works,
and `streaming=True` reads rows as they come instead of first converting the whole corpus to Arrow
in the datasets cache (for corpora too big to store twice). Either way the rows come out in the same
order and give the same documents, so a streamed and a cached run produce the same tokens.

Val is a split of its own (`val_split`) or held out from `split` by a hash of the row index
(`val_fraction`), which needs neither the dataset's length nor a shuffle, so it works streaming.

A file that cannot be read (not UTF-8, not valid JSON or parquet, a damaged .gz) is one line naming
it; a row without text (a JSON record without the field) or with a NUL character (UTF-16 text read
as UTF-8) is refused, as `data=text_files` does (`lmtrain.data.hf_rows`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from lmtrain.data.corpus import (
    BLOCK_CHARS,
    Piece,
    Source,
    check_block_chars,
    check_val_fraction,
    is_val_index,
    take_bytes,
    text_document,
    text_size_hint,
)
from lmtrain.data.hf_files import LocalFiles, local_files, refuse_unread
from lmtrain.data.hf_local import (
    check_load_kwargs,
    check_splits,
    local_builder,
    plain,
    source_text,
    split_names,
)
from lmtrain.data.hf_rows import TEXT_BUILDERS, check_text_rows
from lmtrain.data.read_errors import dataset_read_problem
from lmtrain.data.split_files import refuse_shared_files
from lmtrain.errors import LMTrainError, first_line

log = logging.getLogger(__name__)

# Rows fetched per Arrow batch: large enough to amortize the per-batch cost.
ROWS_PER_BATCH = 1000


class HFDatasetSource(Source):
    """Documents from the `text_column` of a Hugging Face dataset.

    `path` is a hub id ("roneneldan/TinyStories"), a packaged builder ("json", "parquet", "text")
    with `data_files`, a local folder, or a local file or glob (`corpus/*.jsonl`, `x.parquet`),
    whose builder is picked from the extension. `load_kwargs` go to `load_dataset` as they are
    (e.g. `sample_by: document` for the text builder, which otherwise makes each line a document).
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        data_files: str | Sequence[str] | Mapping[str, Any] | None = None,
        data_dir: str | None = None,
        revision: str | None = None,
        text_column: str = "text",
        split: str = "train",
        val_split: str | None = None,
        val_fraction: float = 0.01,
        streaming: bool = False,
        cache_dir: str | None = None,
        load_kwargs: Mapping[str, Any] | None = None,
        block_chars: int = BLOCK_CHARS,
    ) -> None:
        self.path = str(source_text("path", path))
        self.name = source_text("name", name)
        self.data_files = plain(data_files)
        self.data_dir = source_text("data_dir", data_dir)
        self.revision = source_text("revision", revision)
        self.text_column = str(source_text("text_column", text_column))
        self.split = str(source_text("split", split))
        self.val_split = source_text("val_split", val_split)
        check_splits(self.split, self.val_split, bool(streaming))
        self.val_fraction = check_val_fraction(val_fraction)
        self.streaming = bool(streaming)
        self.cache_dir = cache_dir = source_text("cache_dir", cache_dir)
        self.load_kwargs = check_load_kwargs(plain(load_kwargs))
        self.block_chars = check_block_chars(block_chars)
        if cache_dir:  # datasets' Arrow copies of a local folder's files, if it lies there
            self.leave_out({"data.source.cache_dir": cache_dir})

    def leave_out(self, folders: Mapping[str, str | os.PathLike[str]]) -> None:
        super().leave_out(folders)
        # found before the folders were known
        for resolved in ("local_files", "load_args", "builder"):
            self.__dict__.pop(resolved, None)

    @cached_property
    def local_files(self) -> LocalFiles:
        """Which files of a local folder or glob datasets gets (`lmtrain.data.hf_files`)."""
        if self.data_files is not None:
            return LocalFiles()
        where = f"data.source.path={self.path!r}"
        found = local_builder(self.path)[1]
        return local_files(self.path, found, self.data_dir, self._left_out, where)

    @cached_property
    def load_args(self) -> dict[str, Any]:
        """Arguments shared by `load_dataset_builder` and `load_dataset`, None values left out."""
        path, data_files = self.path, self.data_files
        if data_files is None:
            path, data_files = local_builder(path)
            local = self.local_files  # what lmtrain wrote left out; one format for `corpus/*`
            path, data_files = local.builder or path, local.data_files or data_files
        args = {
            "path": path,
            "name": self.name,
            "data_files": data_files,
            "data_dir": self.data_dir,
            "revision": self.revision,
            "cache_dir": self.cache_dir,
            **self.load_kwargs,
        }
        return {key: value for key, value in args.items() if value is not None}

    @cached_property
    def builder(self) -> Any:
        """The dataset builder: resolves the files and the revision without reading any rows,
        and refuses a val split that reads train's files (a train glob over the val files) or a
        folder's files of another format than the one datasets reads."""
        builder = self._load_builder(self.load_args)
        given = self.data_files is not None
        refuse_shared_files(builder.config.data_files, self.split, self.val_split, given)
        read = [f for files in (builder.config.data_files or {}).values() for f in files]
        refuse_unread(self.local_files.expected, read, builder.name, self.path)
        return builder

    def _load_builder(self, args: Mapping[str, Any]) -> Any:
        import datasets

        try:
            return datasets.load_dataset_builder(**args)
        except Exception as err:  # datasets raises many types for "not there", none of them shared
            # datasets lists every extension it knows (hundreds) after a file it cannot find.
            reason = first_line(err).partition(" with any supported extension")[0]
            if self.data_files is not None and "Unable to find" in reason:
                folder = Path(self.path).expanduser().is_dir()  # else a builder: json, text, ...
                raise LMTrainError(
                    f"data.source.data_files={self.data_files!r} ({reason}, with "
                    f"data.source.path={self.path!r}): name files that are there"
                    + (
                        ", relative to data.source.path, or data.source.data_files=null for all "
                        "of its files"
                        if folder
                        else ""
                    )
                ) from None
            raise LMTrainError(
                f"data.source.path={self.path!r} could not be loaded as a Hugging Face dataset "
                f"({reason}): pass a hub id, a local folder, or json/jsonl/parquet/text files"
            ) from None

    def identity(self) -> dict[str, Any]:
        """The builder's config id and hash: they cover local files' mtimes and the hub revision.

        The same for streaming and not, so both find one cache.
        """
        builder = self.builder
        return {"builder": builder.name, "config_id": builder.config_id, "hash": builder.hash}

    def settings(self) -> dict[str, Any]:
        """What shapes the documents; `streaming` and `cache_dir` change how, not which."""
        return {
            "path": self.path,
            "load": {k: v for k, v in self.load_args.items() if k not in ("path", "cache_dir")},
            "text_column": self.text_column,
            "split": self.split,
            "val_split": self.val_split,
            "val_fraction": None if self.val_split else self.val_fraction,
            "block_chars": self.block_chars,
        }

    def describe(self) -> str:
        val = f"val_fraction={self.val_fraction}"
        if self.val_split:
            val = f"val_split={self.val_split}"
        mode = ", streaming" if self.streaming else ""
        return f"Hugging Face dataset {self.path!r} column {self.text_column!r} ({val}{mode})"

    def more_text_hint(self, split: str, documents: int) -> str:
        """With a val split of its own, val_fraction changes nothing: the splits themselves do."""
        if self.val_split:
            return f"pass a bigger data.source.{'split' if split == 'train' else 'val_split'}"
        return super().more_text_hint(split, documents)

    def size_hint(self) -> int | None:
        """Local data files' sizes, else the split sizes the dataset card gives, else None."""
        local = self._local_bytes()
        if local is not None:
            return local
        splits = self.builder.info.splits or {}
        sizes = [splits[name].num_bytes if name in splits else None for name in self._splits()]
        return sum(sizes) if all(sizes) else None

    def sample(self, max_bytes: int) -> Iterator[str]:
        """Local files: spread over the corpus, as any source. Remote: the first `max_bytes`.

        Spreading a sample over a remote dataset would download all of it once more (hub datasets
        are usually shuffled anyway). The rule depends on where the files are, not on
        `streaming`, so a streamed and a cached run train the same tokenizer.
        """
        if self._local_bytes() is not None:
            yield from super().sample(max_bytes)
            return
        train = (piece.text for piece in self.documents() if piece.split == "train")
        yield from take_bytes(train, max_bytes)

    def _splits(self) -> list[str]:
        return [self.split, *([self.val_split] if self.val_split else [])]

    def _local_bytes(self) -> int | None:
        files = self._local_files(*self._splits())
        return sum(text_size_hint(Path(f)) for f in files) if files else None

    def _local_files(self, *splits: str) -> list[str]:
        """The data files of `splits` if they are all local files, else none."""
        data_files = self.builder.config.data_files or {}
        files = [
            f for spec in splits for name in split_names(spec) for f in data_files.get(name, [])
        ]
        return files if all(Path(f).is_file() for f in files) else []

    def documents(self) -> Iterator[Piece]:
        if self.val_split:
            for split, tag in ((self.split, "train"), (self.val_split, "val")):
                for text in self._texts(split):
                    yield from text_document(tag, text, self.block_chars)
            return
        for index, text in enumerate(self._texts(self.split)):
            tag = "val" if is_val_index(index, self.val_fraction) else "train"
            yield from text_document(tag, text, self.block_chars)

    def _texts(self, split: str) -> Iterator[str]:
        """The text column of `split`, row by row, fetched in Arrow batches."""
        import datasets

        known = list(self.builder.config.data_files or {}) or list(self.builder.info.splits or {})
        if known and not set(split_names(split)) <= set(known):  # "train[:10%]" slices train
            key = "val_split" if split == self.val_split else "split"
            raise LMTrainError(
                f"data.source.{key}={split!r} is not a split of {self.path!r}: use one of "
                f"{', '.join(map(str, known))}"
            )
        try:
            yield from self._read_column(datasets, split)
        except LMTrainError:
            raise
        except Exception as err:
            if (problem := dataset_read_problem(err)) is None:
                raise
            raise LMTrainError(f"{self._failed_file(datasets, split)}{problem}") from None

    def _failed_file(self, datasets: Any, split: str) -> str:
        """The local file that reading `split` failed on: the only one, or the first of several
        that fails when read alone (a second pass, made only once reading has failed; datasets'
        errors do not say which file); else data.source.path."""
        files = self._local_files(split)
        if len(files) == 1:
            return repr(files[0])
        if files:
            log.warning(
                "Reading the %d files of %r one by one to find the bad one", len(files), split
            )
        for file in files:
            alone = {"data_files": file, "cache_dir": self.cache_dir, **self.load_kwargs}
            try:
                rows = datasets.load_dataset(
                    self.builder.name, **alone, split="train", streaming=True
                )
                for _ in rows.iter(batch_size=ROWS_PER_BATCH):
                    pass
            except Exception:  # whatever it is, this file fails on its own
                return repr(file)
        return f"data.source.path={self.path!r}"

    def _read_column(self, datasets: Any, split: str) -> Iterator[str]:
        dataset = datasets.load_dataset(**self.load_args, split=split, streaming=self.streaming)
        columns = dataset.column_names
        if columns is not None and self.text_column not in columns:
            raise LMTrainError(
                f"data.source.text_column={self.text_column!r} is not a column of {self.path!r}: "
                f"use one of {', '.join(columns)}"
            )
        if columns is not None:
            dataset = dataset.select_columns([self.text_column])
        row = 0
        files = partial(self._text_files, split)
        for batch in dataset.iter(batch_size=ROWS_PER_BATCH):
            if self.text_column not in batch:
                raise LMTrainError(
                    f"data.source.text_column={self.text_column!r} is not a column of "
                    f"{self.path!r}: use one of {', '.join(batch)}"
                )
            texts = batch[self.text_column]
            check_text_rows(texts, row, split, self.text_column, self.path, files)
            row += len(texts)
            yield from texts

    def _text_files(self, split: str) -> list[str]:
        """The local files `split` reads as text (see `check_text_rows`), else none."""
        return self._local_files(split) if self.builder.name in TEXT_BUILDERS else []
