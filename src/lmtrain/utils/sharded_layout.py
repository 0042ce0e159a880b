"""What a sharded checkpoint folder is (`trainer=fsdp`), for every layer: the readers and writers
of `lmtrain.utils` know it from here, as `lmtrain.models` and `lmtrain.strategies` do.
"""

from __future__ import annotations

from pathlib import Path

# Written by Lightning beside the shards of a sharded (DCP) checkpoint folder: everything of the
# checkpoint but the tensors.
SHARDED_META_FILE = "meta.pt"


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A sharded (DCP) checkpoint folder: the tensors, plus `meta.pt` with everything else.

    Written by `trainer=fsdp` (FSDP2: entries `state_dict`, `optimizer_0`, ...), and by the
    FSDP1 strategy of earlier versions (`model`, `optimizer_0`, ...).
    """
    return Path(path).is_dir() and (Path(path) / SHARDED_META_FILE).is_file()
