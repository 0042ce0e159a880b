"""Text the tests write, and readers of what the data pipeline made of it.

Every corpus is written by the test that needs it, so the tests run anywhere with nothing outside
the repository: word-list documents a tiny model learns in a few steps (`write_corpus`,
`one_file_corpus`), a play that stands in for Tiny Shakespeare (`write_play`), and documents laid
out to trip a pipeline up (`DOCS`) in the formats the sources read.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from lmtrain.data.corpus import SPLITS, Source
from lmtrain.data.token_cache import load_meta
from lmtrain.data.tokenizers import TokenizerSettings

SENTENCE_WORDS = "the quick brown fox jumps over a lazy dog and the cat sat on the mat while one "
SENTENCE_WORDS += "small bird sings in the old tree near the river"
WORDS = SENTENCE_WORDS.split()


def write_corpus(folder: Path, n_docs: int = 4, lines: int = 150, seed: int = 0) -> Path:
    """A folder of plain ASCII documents: short sentences of a small word list (learnable)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
            for _ in range(lines)
        ]
        (folder / f"doc{i}.txt").write_text("\n".join(sentences) + "\n")
    return folder


def one_file_corpus(folder: Path, seed: int = 0) -> Path:
    """One text file (~20 KB) of `write_corpus`'s documents: split by characters, the last 10%
    is val."""
    docs = write_corpus(folder / "docs", seed=seed)
    path = folder / "corpus.txt"
    path.write_text("".join(p.read_text() for p in sorted(docs.iterdir())))
    return path


def write_play(path: Path, speeches: int = 300, seed: int = 0) -> Path:
    """A play in one text file (~22 KB for 300 speeches), in Tiny Shakespeare's layout: each
    speech a speaker's name and a colon on its own line, then a line of the small word list.

    Every character the shipped sample prompts use is in it ("ROMEO:", a newline, "def ",
    "class "), so a char vocabulary built from it encodes them.
    """
    rng = random.Random(seed)
    lines = [
        f"{rng.choice(['ROMEO', 'JULIET'])}:\n"
        + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize()
        + ", def class.\n"
        for _ in range(speeches)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


# Documents with the things that break naive pipelines: indentation after a newline, blank lines,
# a trailing newline or none, non-ASCII text, and one long document that is read in pieces.
DOCS = [
    f"def f{i}(x):\n    return x * {i}  # café {i}\n\n\nclass C{i}:\n\tpass\n" * (1 + i % 3)
    for i in range(40)
]
DOCS += ["no trailing newline, 日本語 🙂", "x" * 50 + "\n" + "    indented\nline\n" * 400]


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


def token_files(cache_path: Path) -> dict[str, bytes]:
    return {split: (cache_path / f"{split}.bin").read_bytes() for split in ("train", "val")}


def split_at_eos(cache_path: Path, split: str, eos_id: int) -> list[list[int]]:
    """The split's token stream cut at each end-of-text id (which must end the stream)."""
    tokens = np.asarray(load_tokens(cache_path, split))
    ends = np.flatnonzero(tokens == eos_id)
    assert ends.size and ends[-1] == tokens.size - 1
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends, strict=True)]


def build_tokenizer(kind: str, train_docs: list[str], val_docs: tuple = (), **settings: Any):
    """The tokenizer `data.tokenizer.kind=<kind>` builds from these documents (char: both splits,
    as the token cache gives it every document)."""
    texts = [*train_docs, *val_docs] if kind == "char" else train_docs
    return TokenizerSettings(kind=kind, **settings).build(texts)
