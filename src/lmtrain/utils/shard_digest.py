"""A checksum of every file of a sharded (DCP) checkpoint folder, written into its `meta.pt` and
checked before its tensors are read.

A shard damaged on disk (a bad sector, a copy that went wrong, a file from another save) still
loads: `consolidate` merges it and `resume` trains on garbage, with exit code 0. One-file
checkpoints carry a digest of their tensors (`lmtrain.utils.tensor_digest`); a folder carries
one of each file torch.distributed.checkpoint wrote (`.metadata` and every `__*.distcp`), under
`SHARD_DIGESTS_KEY` in `meta.pt`: `{file name: [size in bytes, blake2b hex digest]}`, read
back with weights-only loading like the rest of `meta.pt`.

Whole files are hashed, not tensors: what is checked is exactly what was written. Saving, each
rank hashes the files it wrote itself (`__<rank>_*.distcp`, rank 0 also `.metadata`), while they
are still in the page cache, and the digests are gathered in memory (`record`); reading, the
ranks split the files the same way and every rank learns every rank's verdict (`verify`), so
all stop together. blake2b costs about a second per GB on one core: a save or a resume pays
that for the largest share of one rank, `consolidate` (one process) for the whole folder.
Before that, `check_recorded` looks at what costs nothing: every file there, of its size, and
`.metadata` (small, and about to be unpickled) hashed. A folder without the key (saved before
it existed, or by another tool) is read as before.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import torch.distributed as dist

from lmtrain.errors import LMTrainError, RankAgreedError
from lmtrain.utils.damaged_checkpoint import instead

SHARD_DIGESTS_KEY = "lmtrain_shard_digests"
METADATA_FILE = ".metadata"
SHARD_NAME = re.compile(r"__(\d+)_\d+\.distcp")  # DCP's FileSystemWriter: __<rank>_<n>.distcp
CHUNK_BYTES = 8 << 20


def file_digest(path: Path) -> str:
    """blake2b of the file's bytes, read in chunks into one buffer."""
    hasher = hashlib.blake2b(digest_size=32)
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            hasher.update(view[:read])
    return hasher.hexdigest()


def checkpoint_files(folder: Path) -> list[str]:
    """The files DCP writes into a checkpoint folder: `.metadata` and every `*.distcp`."""
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_file() and (p.name == METADATA_FILE or p.suffix == ".distcp")
    )


def owner(name: str, world_size: int) -> int:
    """The rank that hashes `name`: rank r the shards `__r_*.distcp` it wrote (r modulo the ranks
    there are when a folder is read on fewer of them), rank 0 the rest."""
    match = SHARD_NAME.fullmatch(name)
    return int(match[1]) % world_size if match else 0


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gathered(value: Any) -> list[Any]:
    """Every rank's `value` (a small picklable one), on every rank; `[value]` in one process."""
    if rank_and_world()[1] == 1:
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def record(folder: Path, target: Path) -> dict[str, list[int | str]]:
    """Every rank, once the DCP save into `folder` returned (every file written, `.metadata`
    too): the size and digest of each file DCP wrote, each hashed by its owner, gathered on every
    rank. A rank that cannot read its files back stops every rank (`target`: the checkpoint's
    name in the line)."""
    rank, world = rank_and_world()
    try:
        mine = {
            name: [(folder / name).stat().st_size, file_digest(folder / name)]
            for name in checkpoint_files(folder)
            if owner(name, world) == rank
        }
        share: dict[str, Any] = {"digests": mine}
    except OSError as err:
        share = {"error": f"{err.filename}: {os.strerror(err.errno or 0)}"}
    digests: dict[str, list[int | str]] = {}
    for other in gathered(share):
        if "error" in other:
            raise RankAgreedError(
                f"could not read back the checkpoint {target} just written, to record its "
                f"checksums ({other['error']}): check the disk of {target.parent}"
            )
        digests.update(other["digests"])
    return digests


def damaged(folder: Path, problem: str, cause: str) -> str:
    """The line for a folder whose file `problem` describes (`cause`: how that comes about)."""
    return f"ckpt_path={str(folder)!r} is damaged: {problem} ({cause}): {instead(folder)}"


def parsed(folder: Path, recorded: Any) -> dict[str, tuple[int, str]]:
    """`recorded` (from `meta.pt`) as {file name: (size, digest)}, or one line when it is not
    what `record` writes (a damaged or crafted `meta.pt`)."""

    def valid(name: Any, value: Any) -> bool:
        plain = isinstance(name, str) and name == PurePath(name).name and name not in ("", "..")
        pair = isinstance(value, list | tuple) and len(value) == 2
        return plain and pair and isinstance(value[0], int) and isinstance(value[1], str)

    if not isinstance(recorded, Mapping) or not all(valid(*item) for item in recorded.items()):
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} has checksums of its files ({SHARD_DIGESTS_KEY} in "
            "meta.pt) that are not file name -> [size, digest] (meta.pt damaged or crafted): "
            f"{instead(folder)}"
        )
    return {name: (value[0], value[1]) for name, value in recorded.items()}


def check_recorded(folder: Path, recorded: Any) -> None:
    """What costs nothing to check: every file of the save there, of the size it was written
    with, and `.metadata` (small, and about to be unpickled) hashed. Nothing without `recorded`
    (an older save)."""
    if recorded is None:
        return
    entries = parsed(folder, recorded)
    for name, (size, _) in entries.items():
        path = folder / name
        if not path.is_file():
            cause = "deleted, or the folder was copied in part"
            raise LMTrainError(damaged(folder, f"{name} is missing", cause))
        if (found := path.stat().st_size) != size:
            cause = "cut short or overwritten after it was saved, or from another save"
            raise LMTrainError(damaged(folder, f"{name} is {found} bytes, not {size}", cause))
    if METADATA_FILE in entries:
        compare(folder, {METADATA_FILE: entries[METADATA_FILE]}, agreed=False)


def verify(folder: Path, recorded: Any, on_ranks: bool = False) -> None:
    """Hash every file `recorded` names and compare. `on_ranks`: every rank of the process group
    calls this (a resume), each hashes its share and all raise the same RankAgreedError; else
    this process hashes every file (`consolidate`). Nothing without `recorded` (an older save)."""
    if recorded is not None:
        agreed = on_ranks and rank_and_world()[1] > 1
        compare(folder, parsed(folder, recorded), agreed=agreed)


def compare(folder: Path, entries: dict[str, tuple[int, str]], agreed: bool) -> None:
    """Compare the files of `entries` with their digests: this rank's share when `agreed` (all
    ranks call it and learn each other's findings), else all of them."""
    rank, world = rank_and_world() if agreed else (0, 1)
    finding = None
    changed = "the file changed on disk after it was saved, or comes from another save"
    try:
        for name in sorted(n for n in entries if owner(n, world) == rank):
            if file_digest(folder / name) != entries[name][1]:
                finding = (f"{name} does not match the checksum written with it", changed)
                break
    except OSError as err:
        name, why = PurePath(str(err.filename)).name, os.strerror(err.errno or 0)
        finding = (f"{name} cannot be read ({why})", "a failing disk, or the file's permissions")
    findings = [f for f in (gathered(finding) if agreed else [finding]) if f is not None]
    if findings:
        error = RankAgreedError if agreed else LMTrainError
        raise error(damaged(folder, *findings[0]))
