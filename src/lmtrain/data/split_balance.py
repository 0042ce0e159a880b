"""A split of whole files far from `data.source.val_fraction`, told when the corpus is read.

A corpus of a few files is split file by file (`lmtrain.data.sources.assign_splits`): with two
files and `val_fraction=0.1`, one of them goes to val, and if it is the bigger, most of the text
never trains, without a word (red team rev_sweep: 73% of the tokens went to val). The other way
round, a small file that falls in val beside a big one is all of val: a 1.2 KB README beside a
1.2 MB corpus.jsonl made val 0.1% of the tokens with val_fraction=0.1, a val loss measured on one
page, without a word either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from lmtrain.data.corpus import text_size_hint

log = logging.getLogger(__name__)

# Val below this share of `val_fraction` is not what was asked: files of similar sizes rarely
# split that far below it by hash; a small file or two that fell in val alone do.
TOO_SMALL = 0.25
# Splits already told of: a run reads the documents more than once (a char vocabulary, then the
# tokens), and one warning is one line.
_told: set[tuple[object, ...]] = set()


def warn_lopsided_split(files: Sequence[Path], splits: Sequence[str], val_fraction: float) -> None:
    """Warn when the val files hold far more, or far less, of the text than `val_fraction` asks
    (their sizes on disk: the tokens are not counted yet)."""
    sizes = [text_size_hint(path) for path in files]
    total = sum(sizes)
    val = sum(size for size, split in zip(sizes, splits, strict=True) if split == "val")
    count = sum(split == "val" for split in splits)
    key = (tuple(map(str, files)), tuple(splits), tuple(sizes), val_fraction)
    if not total or key in _told:
        return
    if val / total > max(2 * val_fraction, val_fraction + 0.15):
        _told.add(key)
        log.warning(
            "%d of the corpus's %d files go to val, %.0f%% of its text "
            "(data.source.val_fraction=%g): files are split whole, so few files split unevenly; "
            "pass more files, or one file (split by characters)",
            count,
            len(files),
            100 * val / total,
            val_fraction,
        )
    elif val_fraction > 0 and val / total < TOO_SMALL * val_fraction:
        _told.add(key)
        log.warning(
            "%d of the corpus's %d files go to val, only %.2g%% of its text where "
            "data.source.val_fraction=%g asks for %g%%: files are split whole by a hash of their "
            "paths, so a few files of uneven sizes split unevenly and val measures little text; "
            "pass more files of similar sizes, or the big file alone (one .jsonl splits by "
            "document, one text file by characters)",
            count,
            len(files),
            100 * val / total,
            val_fraction,
            100 * val_fraction,
        )
