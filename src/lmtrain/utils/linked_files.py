"""Refuse a run folder whose files lmtrain writes in place are symbolic links.

Most of a run's files are replaced atomically (a temporary file renamed over the old one), which
replaces a link rather than writing through it. A few are written in place: Hydra's
`<job>.log` and `.hydra/*.yaml`, the CSV logger's files and `csv/batch_starts`, and the lock
(which `lmtrain.utils.locks` opens without following links). A run folder copied from a
colleague, or shared, with such a file linked elsewhere would have a resumed run write into the
file the link points to, anywhere the user can write. Other links (`checkpoints/` on scratch
storage) are a user's choice, and are left alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmtrain.errors import LMTrainError

# The run folder's files written in place (the lock, its fallback owner file; Hydra's `<job>.log`
# is any `*.log`), and its subfolders whose files are (Hydra's record, the CSV logger's).
WRITTEN_IN_PLACE_FILES = (".lock", ".lock.owner")
WRITTEN_IN_PLACE_FOLDERS = (".hydra", "csv")


def linked_files(folder: Path) -> list[Path]:
    """The links among what a run writes in place in `folder`: its lock and log files, its
    `WRITTEN_IN_PLACE_FOLDERS` and their files. Other links (`checkpoints/` to scratch storage,
    made before its target exists; a README linked from notes) are the user's."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.is_symlink() and (p.name in WRITTEN_IN_PLACE_FILES or p.name.endswith(".log"))
    ]
    for sub in (folder / name for name in WRITTEN_IN_PLACE_FOLDERS):
        if sub.is_symlink():
            found.append(sub)
        elif sub.is_dir():
            found += [p for p in sorted(sub.iterdir()) if p.is_symlink()]
    return found


def refuse_linked_files(folder: Path, key: str, other: str = "") -> None:
    """Raise LMTrainError naming the first such link in run folder `folder` (set by `key`;
    `other`: how to pass another folder, by default `another <key>`)."""
    found = linked_files(folder)
    if found:
        link = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LMTrainError(
            f"{key}={folder} holds a symbolic link {link.relative_to(folder)} -> "
            f"{os.readlink(link)}{more}, which the run would write through: replace it with a "
            f"copy of what it points to, or {other or f'pass another {key}'}"
        )
