"""Which files a corpus path names: a folder's files at any depth, a glob's fixed root.

`Path.rglob` (Python 3.11) neither follows links to folders nor reports a subfolder it cannot
list, so a folder and the `**` glob of the same tree gave different corpora, silently; the walk
here follows links, visits each real folder once (a link loop ends) and refuses an unreadable one.
What lmtrain writes is recognised wherever it lies under a corpus path (`lmtrain_folder`): a
token cache, run or sweep of another `data.cache_dir` or `paths.log_dir` is no text either.
Nor is version control's own store (`.git`, `.hg`, `.svn`): a walk leaves it out, as a `**` glob
does every name starting with a dot; a path that names a file or folder inside it is read as typed.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import setting_text

log = logging.getLogger(__name__)

# A token cache's lock and build folders: its 64-hex fingerprint and a suffix. The finished
# cache's folder has the fingerprint alone, a name a user's own file or folder may have too (a
# content-addressed store), so there only its contents mark it (`folder_kind`).
LEFTOVER = re.compile(r"[0-9a-f]{64}(\.lock|\.tmp-.*)")
# Version control's own folders: an object store, an index and hooks, binary or generated, never
# corpus text (a checked-out repository's `.git/index` was refused with "remove it"). A submodule's
# or worktree's `.git` is a file that points at its folder: left out too.
VERSION_CONTROL = frozenset({".git", ".hg", ".svn", ".bzr", ".jj"})
# Version-control folders a log line names at most; the rest are counted.
NAMED_AT_MOST = 3


def corpus_paths(path: Any) -> list[str]:
    """`data.source.path` as texts: one file, folder or glob, or a list of them. A number is the
    name it was typed as (`data.source.path=2024`, a folder); a mapping, or a list inside the
    list, is one line naming the setting (a mapping was read as its keys)."""
    what = "a file, folder or glob, or a list of them"
    if isinstance(path, Sequence) and not isinstance(path, str):
        return [
            str(setting_text(f"data.source.path[{i}]", item, what, required=True))
            for i, item in enumerate(path)
        ]
    return [str(setting_text("data.source.path", path, what, required=True))]


def same_file_key(path: str | os.PathLike[str]) -> tuple[int, int] | str:
    """What two names of one file share: its device and inode for a file with hard links
    (`ln a.txt b.txt`: two real paths, one text, read twice and split into both train and val),
    else its real path (a symbolic link, `a/../a`), as before hard links were looked for, so
    that a filesystem without real inode numbers merges nothing."""
    info = os.stat(path)
    if info.st_nlink > 1:
        return info.st_dev, info.st_ino
    return os.path.realpath(path)


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
    Version-control folders below `folder` (`VERSION_CONTROL`) are left out, in one info line.

    `setting` is data.source.path as given, for the message.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    version_control: list[Path] = []
    pending = deque([folder])  # breadth first: a folder is named by its shortest path
    while pending:
        current = pending.popleft()
        real = current.resolve()
        if real in seen:
            continue
        seen.add(real)
        if current != folder and real.name in VERSION_CONTROL:  # a link to one, by another name
            version_control.append(current)
            continue
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
            if entry.name in VERSION_CONTROL:
                version_control.append(path)
            elif entry.is_dir():  # follows links
                pending.append(path)
            else:
                files.append(path)
    log_version_control(version_control, setting)
    return sorted(files)


def log_version_control(folders: list[Path], setting: str) -> None:
    """One info line naming the version-control folders a walk left out (not their files: a
    repository's object store can hold millions)."""
    if not folders:
        return
    named = ", ".join(map(str, folders[:NAMED_AT_MOST]))
    more = f" and {len(folders) - NAMED_AT_MOST} more" if len(folders) > NAMED_AT_MOST else ""
    log.info(
        "Left %d version-control folder%s under data.source.path=%s out of the corpus "
        "(version control's own files, never corpus text): %s%s",
        len(folders),
        "" if len(folders) == 1 else "s",
        setting,
        named,
        more,
    )


def lmtrain_folder(file: Path, root: Path, kinds: dict[Path, str | None]) -> Path | None:
    """The folder below `root` holding `file` that lmtrain wrote, or `file` itself if it is a
    cache's lock, or None. `root` is what the user named, so it is never one: reading a run's
    folder on purpose is theirs to do. `kinds` caches what each folder was found to be."""
    if LEFTOVER.fullmatch(file.name):
        return file
    for folder in reversed(file.parents):  # outermost first: a run's whole folder is named
        if folder == root or not folder.is_relative_to(root):
            continue
        if folder not in kinds:
            kinds[folder] = folder_kind(folder)
        if kinds[folder]:
            return folder
    return None


def folder_kind(folder: Path) -> str | None:
    """What lmtrain wrote `folder` as: a token cache, a run (`.hydra/`) or a sweep, or None."""
    bins = any((folder / name).is_file() for name in ("train.bin", "val.bin"))
    if LEFTOVER.fullmatch(folder.name) or (bins and (folder / "meta.json").is_file()):
        return "a token cache"
    if (folder / ".hydra").is_dir():
        return "a run folder"
    return "a sweep folder" if (folder / "multirun.yaml").is_file() else None


def refuse_unreadable(files: list[Path], setting: str) -> None:
    """Raise LMTrainError naming the first of `files` this user may not read (and how many more),
    before any is opened. `setting` is data.source.path as given."""
    unreadable = [f for f in files if not os.access(f, os.R_OK)]
    if unreadable:
        more = f" and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        raise LMTrainError(
            f"{str(unreadable[0])!r}{more} under data.source.path={setting!r} is not readable by "
            "this user (permission denied): make it readable (chmod a+r) or leave it out of "
            "data.source.path"
        )


def unusable_entry(path: Path, setting: str) -> LMTrainError | None:
    """The refusal of a match that is neither a folder nor a regular file: a link whose target
    is gone, or a FIFO, socket or device (reading would block or never end). Skipped, it left
    the corpus without a word, and a list of two files became one file split by characters.
    None for a name too deep in a link loop to follow (a shorter name of it is read)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if not path.is_symlink():
            return None  # gone since it was listed
        what, fix = f"a link to {os.readlink(path)!r}, which does not exist", "fix or remove it"
        return LMTrainError(f"{str(path)!r} under data.source.path={setting!r} is {what}: {fix}")
    except OSError:  # too many levels of links
        return None
    if stat.S_ISDIR(mode) or stat.S_ISREG(mode):
        return None
    return LMTrainError(
        f"{str(path)!r} under data.source.path={setting!r} is not a regular file (a FIFO, socket "
        "or device, which reading would block on): leave it out"
    )


def warn_overlaps(overlaps: dict[tuple[Path, Path], int], setting: str) -> None:
    """Say which files two arguments of data.source.path both reach ((first, later): count).
    Each splits by its path under the first argument in the list that reaches it, so putting the
    later one first would move files between train and val."""
    for (first, later), count in overlaps.items():
        log.warning(
            "data.source.path=%r: %d files are under both %s and %s, and split by their path "
            "under %s, the first in the list: keep that order, or their train/val split changes",
            setting,
            count,
            first,
            later,
            first,
        )
