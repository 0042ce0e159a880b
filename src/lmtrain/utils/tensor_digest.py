"""A checksum of every tensor in a checkpoint, written into it and checked when it is read.

A checkpoint whose tensor bytes were damaged on disk (a bad sector, a copy cut short and padded)
still unpickles: it evaluates to NaN, or training resumes from garbage, with exit code 0. So
`AtomicCheckpointIO` adds `DIGEST_KEY` (a blake2b digest of every tensor's bytes, in a fixed
order) to each checkpoint it writes, and every reader compares it (`verify`): a damaged file is
one line naming it. Checkpoints without the key (older ones, other writers) are read as they are.
Hashing costs about a second per GB of weights and optimizer state, on every save and load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from lmtrain.errors import LMTrainError
from lmtrain.utils.damaged_checkpoint import instead

DIGEST_KEY = "lmtrain_tensor_digest"


def tensors_in(value: Any, path: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor under `value` with its path, dict keys in sorted order."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            if key != DIGEST_KEY:
                yield from tensors_in(value[key], f"{path}/{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from tensors_in(item, f"{path}/{i}")


def digest(checkpoint: Mapping[str, Any]) -> str:
    """blake2b over each tensor's path, dtype, shape and bytes."""
    hasher = hashlib.blake2b(digest_size=32)
    for path, tensor in tensors_in(checkpoint):
        data = tensor.detach().cpu().contiguous()
        hasher.update(f"{path}|{data.dtype}|{tuple(data.shape)}|".encode())
        if data.numel():
            hasher.update(data.reshape(-1).view(torch.uint8).numpy())
    return hasher.hexdigest()


def add_digest(checkpoint: dict[str, Any]) -> None:
    checkpoint[DIGEST_KEY] = digest(checkpoint)


def verify(checkpoint: Any, path: str | Path) -> None:
    """Raise one line naming `path` when its tensors do not match the digest written with them."""
    if not isinstance(checkpoint, Mapping) or DIGEST_KEY not in checkpoint:
        return
    # A sparse (or other non-strided) tensor has no bytes to hash: digest() raised torch's
    # RuntimeError. lmtrain never writes one, so the file is not as it was saved.
    odd = next(
        ((at, t.layout) for at, t in tensors_in(checkpoint) if t.layout != torch.strided), None
    )
    if odd is not None:
        raise LMTrainError(
            f"ckpt_path={str(path)!r} holds a {odd[1]} tensor at {odd[0]}, which no checkpoint "
            f"lmtrain writes holds (the file was changed after it was saved): {instead(path)}"
        )
    if digest(checkpoint) != checkpoint[DIGEST_KEY]:
        raise LMTrainError(
            f"ckpt_path={str(path)!r} is damaged: its tensors do not match the checksum written "
            f"with them (the file changed on disk after it was saved): {instead(path)}"
        )
