"""Checksums of the token cache's files.

A token file damaged in place (a bad disk, a copy that went wrong, garbage of the same size)
passes the size check and fails later, in every run, as an IndexError or a silent loss. The
cache records a sha256 of each file when it is built; every process that opens the cache
compares a cheap sampled digest (the size and 64 blocks of 4 KiB spread over the file), and
ranks on different nodes compare the full ones (`data_digest`), which they read from meta.json.
Damage between the sampled blocks is still caught where it would crash a run: each window read
is checked to hold no id at or above the vocabulary size (`lmtrain.data.windows`). The
tokenizer's files (subfolders included) are small and hashed whole (`folder_checksums`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SAMPLED_BLOCKS = 64
BLOCK_BYTES = 4096
READ_BYTES = 1 << 20


def full_digest(path: Path) -> str:
    """sha256 of the whole file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(READ_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sampled_digest(path: Path) -> str:
    """sha256 of the file's size and of SAMPLED_BLOCKS blocks at evenly spaced offsets: reads
    256 KiB whatever the file's size."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    step = max(BLOCK_BYTES, size // SAMPLED_BLOCKS)
    with path.open("rb") as f:
        for offset in range(0, size, step):
            f.seek(offset)
            digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()


def file_checksums(paths: dict[str, Path]) -> dict[str, dict[str, str]]:
    """{name: {"sha256": full, "sampled": sampled}} for meta.json."""
    return {
        name: {"sha256": full_digest(path), "sampled": sampled_digest(path)}
        for name, path in paths.items()
    }


def folder_checksums(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file in `folder` and its subfolders (a saved tokenizer:
    a few files of at most some MB); empty when the folder is missing.

    Subfolders count: transformers saves extra chat templates under
    `additional_chat_templates/`, and an edit there must not pass. A file directly in `folder`
    keys by its name, as when only those were hashed, so caches of flat folders stay valid.
    """
    if not folder.is_dir():
        return {}
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): full_digest(path) for path in files}


def damaged_files(paths: dict[str, Path], recorded: dict[str, dict[str, str]]) -> list[str]:
    """The files whose sampled digest differs from the recorded one."""
    return [
        name for name, path in paths.items() if sampled_digest(path) != recorded[name]["sampled"]
    ]


def data_digest(folder: Path, meta: dict) -> str:
    """One digest of what a cache serves: its tokenizer and its token files' full checksums."""
    digest = hashlib.sha256((folder / "tokenizer" / "tokenizer.json").read_bytes())
    for name in sorted(meta["checksums"]):
        digest.update(f"{name}:{meta['checksums'][name]['sha256']}".encode())
    return digest.hexdigest()
