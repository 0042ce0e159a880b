"""bench_data.py's inputs and its bare side: corpora of a given size built from the standard
library's sources, the byte-level BPE trained on one, and the tokenizer alone on the same texts.

Each repetition of the sources has its letters rotated by one more place, so that no text
repeats and the tokenizer's word cache cannot shortcut a larger corpus. In --corpus-dir the
script writes only `stdlib_<N>mb/` and `bpe_<V>/`; a folder of those names holding anything else
is the user's, and is refused before any work rather than replaced.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
import tempfile
import time
from pathlib import Path

MB = 1_000_000
# What `save_pretrained` writes into bpe_<V>/ (special_tokens_map.json: older transformers).
BPE_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}


def corpus_dir_problem(corpus_dir: Path, sizes_mb: list[int], vocab_size: int) -> str | None:
    """Why the corpora and the BPE cannot be built in `corpus_dir`, or None: it must be (or be
    creatable as) a writable folder, and its stdlib_<N>mb/ and bpe_<V>/ must be empty, this
    script's own (a complete corpus, a saved tokenizer), or absent."""
    from bench_out import refusal

    other = "move it away or pass another --corpus-dir"
    folder = next(p for p in (corpus_dir.absolute(), *corpus_dir.absolute().parents) if p.exists())
    if not folder.is_dir():
        return f"--corpus-dir {corpus_dir}: {folder} is not a folder: pass a folder's path"
    refused = refusal(folder)
    if refused is not None:
        return f"--corpus-dir {corpus_dir}: {folder} is not writable ({refused}): pass another"
    folders = [corpus_dir / f"stdlib_{size}mb" for size in sizes_mb]
    for path in [*folders, corpus_dir / f"bpe_{vocab_size}"]:
        if path.exists() and not path.is_dir():
            return f"--corpus-dir {corpus_dir}: {path} is a file, not this script's: {other}"
        names = sorted(p.name for p in path.iterdir()) if path.exists() else []
        own = ".complete" in names if path in folders else set(names) <= BPE_FILES
        if names and not own:
            return (
                f"--corpus-dir {corpus_dir}: {path} holds {', '.join(names[:3])}, not this "
                f"script's corpus or tokenizer: {other}"
            )
    return None


def build_corpus(folder: Path, size_mb: int) -> Path:
    """`size_mb` MB of stdlib sources in files, the k-th repetition with letters rotated by k."""
    if (folder / ".complete").is_file():
        return folder
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    texts = [
        (p.relative_to(stdlib), p.read_text(encoding="utf-8", errors="replace")) for p in sources
    ]
    # Built in a new folder beside it (mkdtemp: never one of the user's), renamed over it (absent
    # or empty: corpus_dir_problem) when whole; what is left of it goes, whatever happened.
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{folder.name}.tmp-", dir=folder.parent))
    try:
        fill(staging / "corpus", texts, size_mb)
        os.replace(staging / "corpus", folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def fill(tmp: Path, texts: list[tuple[Path, str]], size_mb: int) -> None:
    """Write the rotated repetitions into `tmp` up to `size_mb` MB, then its `.complete`."""
    written, repetition = 0, 0
    while written < size_mb * MB:
        lower, upper = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        k = repetition % 26
        table = str.maketrans(lower + upper, lower[k:] + lower[:k] + upper[k:] + upper[:k])
        for relative, text in texts:
            if written >= size_mb * MB:
                break
            path = tmp / f"rep{repetition:02}" / relative.with_suffix(".txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            data = text.translate(table).encode("utf-8")
            path.write_bytes(data)
            written += len(data)
        repetition += 1
    (tmp / ".complete").write_text(f"{written}\n")


def corpus_texts(folder: Path) -> list[str]:
    """The texts prepare_data() encodes (files over 1 MB come in pieces), read outside the clock."""
    from lmtrain.data.sources import TextFilesSource

    return [piece.text for piece in TextFilesSource(str(folder)).documents()]


def train_tokenizer(corpus: Path, vocab_size: int, sample_mb: float, out: Path) -> float:
    """Byte-level BPE trained on `sample_mb` MB spread over `corpus`; returns seconds."""
    from lmtrain.data.sources import TextFilesSource
    from lmtrain.data.tokenizers import bpe_tokenizer

    start = time.perf_counter()
    sample = TextFilesSource(str(corpus)).sample(int(sample_mb * MB))
    bpe_tokenizer(sample, vocab_size).save_pretrained(out)
    return time.perf_counter() - start


def bare_mb_per_s(texts: list[str], tokenizer_dir: Path, method: str) -> float:
    """The tokenizer alone, on every core, in ~1 MB batches of the texts already in memory."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    encode = getattr(tokenizer, method)
    batches, batch, size = [], [], 0
    for text in texts:
        batch.append(text)
        size += len(text.encode("utf-8"))
        if size >= MB:
            batches.append(batch)
            batch, size = [], 0
    batches.append(batch)
    total = sum(len(t.encode("utf-8")) for t in texts)
    start = time.perf_counter()
    for batch in batches:
        encode(batch, add_special_tokens=False)
    return total / MB / (time.perf_counter() - start)
