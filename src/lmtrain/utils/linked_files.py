"""Refuse a run folder whose files lmtrain writes in place are symbolic links.

Most of a run's files are replaced atomically (a temporary file renamed over the old one), which
replaces a link rather than writing through it. A few are written in place: Hydra's
`<job>.log` and `.hydra/*.yaml`, the CSV logger's files and `csv/batch_starts`, and the lock
(which `lmtrain.utils.locks` opens without following links). A run folder copied from a
colleague, or shared, with such a file linked elsewhere would have a resumed run write into the
file the link points to, anywhere the user can write. Links to folders (`checkpoints/` on scratch
storage) are a user's choice, and are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmtrain.errors import LMTrainError

# The run folder's subfolders whose files are written in place (Hydra's record, the CSV logger's).
WRITTEN_IN_PLACE = (".hydra", "csv")


def linked_files(folder: Path) -> list[Path]:
    """Links in `folder` that point to anything but a folder, and links in or to its
    `WRITTEN_IN_PLACE` subfolders."""
    found = []
    if folder.is_dir():
        found += [p for p in sorted(folder.iterdir()) if p.is_symlink() and not p.is_dir()]
    for sub in (folder / name for name in WRITTEN_IN_PLACE):
        if sub.is_symlink():
            found.append(sub)
        elif sub.is_dir():
            found += [p for p in sorted(sub.iterdir()) if p.is_symlink()]
    return found


def refuse_linked_files(folder: Path, key: str) -> None:
    """Raise LMTrainError naming the first file link in run folder `folder` (set by `key`)."""
    found = linked_files(folder)
    if found:
        link = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LMTrainError(
            f"{key}={folder} holds a symbolic link {link.relative_to(folder)} -> "
            f"{os.readlink(link)}{more}, which the run would write through: replace it with a "
            f"copy of the file, or pass another {key}"
        )
