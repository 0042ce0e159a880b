"""What a sharded checkpoint folder is (`trainer=fsdp`), for every layer: the readers and writers
of `lmtrain.utils` know it from here, as `lmtrain.models` and `lmtrain.strategies` do.
"""

from __future__ import annotations

from pathlib import Path

# Written by Lightning beside the shards of a sharded (DCP) checkpoint folder: everything of the
# checkpoint but the tensors.
SHARDED_META_FILE = "meta.pt"
# torch.distributed.checkpoint's index of the shards, written beside them.
DCP_METADATA_FILE = ".metadata"


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A sharded (DCP) checkpoint folder: the tensors, plus `meta.pt` with everything else.

    Written by `trainer=fsdp` (FSDP2: entries `state_dict`, `optimizer_0`, ...), and by the
    FSDP1 strategy of earlier versions (`model`, `optimizer_0`, ...).
    """
    return Path(path).is_dir() and (Path(path) / SHARDED_META_FILE).is_file()


def metadata_folder(path: str | Path) -> Path | None:
    """The sharded checkpoint folder whose `.metadata` file `path` is, else None."""
    path = Path(path)
    try:
        sharded = path.name == DCP_METADATA_FILE and is_sharded_checkpoint(path.parent)
        return path.parent if sharded and path.is_file() else None
    except OSError:
        return None


def one_file_advice(folder: str | Path) -> str:
    """What to pass instead of one file of the sharded checkpoint `folder` (a shard, its
    `.metadata` or `meta.pt`): none is a checkpoint on its own."""
    return (
        f"it is one file of the sharded checkpoint {folder} (trainer=fsdp): pass the folder to "
        "resume with trainer=fsdp, or merge it into one file for eval, generate and export with "
        f"`python -m lmtrain.strategies consolidate {folder}`"
    )
