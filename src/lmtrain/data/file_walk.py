"""Which files a corpus path names: a folder's files at any depth, a glob's fixed root.

`Path.rglob` (Python 3.11) neither follows links to folders nor reports a subfolder it cannot
list, so a folder and the `**` glob of the same tree gave different corpora, silently; the walk
here follows links, visits each real folder once (a link loop ends) and refuses an unreadable one.
"""

from __future__ import annotations

import glob
import os
from collections import deque
from pathlib import Path

from lmtrain.errors import LMTrainError


def glob_root(pattern: Path) -> Path:
    """The leading folders of a glob without wildcards (`books` of `books/**/*.txt`)."""
    fixed = []
    for part in pattern.parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path()


def walk_files(folder: Path, setting: str) -> list[Path]:
    """Every file under `folder`, following links to folders, each real folder visited once
    (a link loop ends); a subfolder this user cannot list is an error, not a silent gap.

    `setting` is data.source.path as given, for the message.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    pending = deque([folder])  # breadth first: a folder is named by its shortest path
    while pending:
        current = pending.popleft()
        real = current.resolve()
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except PermissionError:
            raise LMTrainError(
                f"the folder {str(current)!r} under data.source.path={setting!r} is not readable "
                "by this user (permission denied): make it readable (chmod a+rx) or leave it out "
                "of data.source.path"
            ) from None
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():  # follows links
                pending.append(path)
            else:
                files.append(path)
    return sorted(files)
