"""A split of whole files far from `data.source.val_fraction`, told when the corpus is read.

A corpus of a few files is split file by file (`lmtrain.data.sources.assign_splits`): with two
files and `val_fraction=0.1`, one of them goes to val, and if it is the bigger, most of the text
never trains, without a word (red team rev_sweep: 73% of the tokens went to val).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lmtrain.data.corpus import text_size_hint

log = logging.getLogger(__name__)


def warn_lopsided_split(files: Sequence[Path], splits: Sequence[str], val_fraction: float) -> None:
    """Warn when the val files hold far more of the text than `val_fraction` asks (their sizes
    on disk: the tokens are not counted yet)."""
    sizes = [text_size_hint(path) for path in files]
    total = sum(sizes)
    val = sum(size for size, split in zip(sizes, splits, strict=True) if split == "val")
    if not total or val / total <= max(2 * val_fraction, val_fraction + 0.15):
        return
    count = sum(split == "val" for split in splits)
    log.warning(
        "%d of the corpus's %d files go to val, %.0f%% of its text (data.source.val_fraction=%g): "
        "files are split whole, so few files split unevenly; pass more files, or one file "
        "(split by characters)",
        count,
        len(files),
        100 * val / total,
        val_fraction,
    )
