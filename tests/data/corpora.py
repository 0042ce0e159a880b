"""Small corpora written by the tests: several formats holding the same documents."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lmtrain.data import TextDataModule
from lmtrain.data.corpus import Piece
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.corpus import SPLITS, Source
from lmtrain.data.token_cache import load_meta
from lmtrain.data.tokenizers import TokenizerSettings

# Documents with the things that break naive pipelines: indentation after a newline, blank lines,
# a trailing newline or none, non-ASCII text, and one long document that is read in pieces.
DOCS = [
    f"def f{i}(x):\n    return x * {i}  # café {i}\n\n\nclass C{i}:\n\tpass\n" * (1 + i % 3)
    for i in range(40)
]
DOCS += ["no trailing newline, 日本語 🙂", "x" * 50 + "\n" + "    indented\nline\n" * 400]


def load_splits(source: Source) -> tuple[list[str], list[str]]:
    """All of a source's documents in memory, (train, val): the texts its pieces make up."""
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    parts: dict[str, list[str]] = {split: [] for split in SPLITS}
    for piece in source.documents():
        parts[piece.split].append(piece.text)
        if piece.end:
            splits[piece.split].append("".join(parts[piece.split]))
            parts[piece.split].clear()
    return splits["train"], splits["val"]


def load_tokens(folder: Path, split: str) -> np.memmap:
    """A token cache split, memory-mapped read-only."""
    return np.memmap(folder / f"{split}.bin", dtype=load_meta(folder)["dtype"], mode="r")


def build_tokenizer(kind: str, train_docs: list[str], val_docs: tuple = (), **settings: Any):
    """The tokenizer `data.tokenizer.kind=<kind>` builds from these documents (char: both splits,
    as the token cache gives it every document)."""
    texts = [*train_docs, *val_docs] if kind == "char" else train_docs
    return TokenizerSettings(kind=kind, **settings).build(texts)


def write_jsonl(path: Path, docs: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def write_parquet(path: Path, docs: list[str]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path)
    return path


def write_mixed_files(folder: Path, docs: list[str]) -> Path:
    """One document per file: .txt, .md, .txt.gz and .md.gz in two subfolders."""
    suffixes = [".txt", ".md", ".txt.gz", ".md.gz"]
    for i, doc in enumerate(docs):
        path = folder / f"part{i % 2}" / f"doc{i:03}{suffixes[i % 4]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(doc.encode("utf-8")))
        else:
            path.write_text(doc, encoding="utf-8")
    return folder


def token_files(cache_path: Path) -> dict[str, bytes]:
    return {split: (cache_path / f"{split}.bin").read_bytes() for split in ("train", "val")}


def split_at_eos(cache_path: Path, split: str, eos_id: int) -> list[list[int]]:
    """The split's token stream cut at each end-of-text id (which must end the stream)."""
    tokens = np.asarray(load_tokens(cache_path, split))
    ends = np.flatnonzero(tokens == eos_id)
    assert ends.size and ends[-1] == tokens.size - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends, strict=True)]


class SlowTextFiles(TextFilesSource):
    """Real files read at a throttled pace, so that a build stays under way while a test acts.

    The delay is not a setting: the fingerprint is the same as with no delay.
    """

    def __init__(self, path: str, delay_s: float = 0.0) -> None:
        super().__init__(path, val_fraction=0.25)
        self.delay_s = delay_s

    def documents(self) -> Iterator[Piece]:
        for piece in super().documents():
            time.sleep(self.delay_s)
            yield piece


def slow_datamodule(
    corpus: Path, cache_dir: Path, delay_s: float = 0.0, workers: int = 1
) -> TextDataModule:
    """Char tokenizer and 1 kB chunks: token files grow from the first documents."""
    return TextDataModule(
        SlowTextFiles(str(corpus), delay_s),
        {"kind": "char"},
        block_size=8,
        batch_size=2,
        cache_dir=str(cache_dir),
        prepare_workers=workers,
        prepare_chunk_mb=0.001,
    )


def prepare_in_child(
    corpus: Path, cache_dir: Path, delay_s: float, log_path: Path, workers: int, start: Any
) -> None:
    """A process's whole preparation: logs to `log_path`, cache path to `log_path`.path."""
    handler = logging.FileHandler(log_path)
    logging.getLogger("lmtrain").addHandler(handler)
    logging.getLogger("lmtrain").setLevel(logging.INFO)
    dm = slow_datamodule(corpus, cache_dir, delay_s, workers)
    if start is not None:
        start.wait()
    dm.prepare_data()
    log_path.with_suffix(".path").write_text(str(dm.cache_path))
