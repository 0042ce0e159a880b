"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half.

Every file lmtrain writes for later (metrics.json, samples.txt, checkpoints, a downloaded corpus,
a consolidated checkpoint) goes through `atomic_write`: the bytes go to a temporary file in the
same folder, are flushed and fsynced, and the file is renamed over the target with `os.replace`,
which is atomic on POSIX file systems; the folder is fsynced too, so the rename survives a power
cut. A failed write removes its temporary file; one left by a kill (`.<name>.tmp-<pid>`) is
removed by the next write of that target (one of a live process is its write in progress), or,
for targets never written again (a best checkpoint's name holds its step), by
`remove_killed_writes` when the folder's writer starts again.
Files get the user's umask, as a plain `open()` would (Python's `tempfile` would make them 0600).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lmtrain.errors import LMTrainError
from lmtrain.utils.locks import alive

# What a full disk, a full quota or a file size limit (ulimit -f) raise while a file is written.
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing (`mode` "w" or "wb"); on a clean exit
    it replaces `path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes whole files: mode 'w' or 'wb', not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_killed_writes(target.parent, re.compile(re.escape(target.name)))
    tmp = temporary_path(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)  # 0666 less the umask
    try:
        with open(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def remove_killed_writes(folder: Path, names: re.Pattern[str]) -> list[Path]:
    """Remove the temporary files in `folder` that writes of the files `names` matches (whole
    names) left when their process was killed mid-write; those of a live process stay (its
    write in progress). The removed ones, sorted."""
    removed = []
    for temporary in sorted(folder.glob(".*.tmp-*")):
        target, _, pid = temporary.name[1:].rpartition(".tmp-")
        if not (pid.isascii() and pid.isdigit()) or not names.fullmatch(target):
            continue
        if temporary.is_file() and not writer_alive(temporary):
            temporary.unlink(missing_ok=True)
            removed.append(temporary)
    return removed


def writer_alive(temporary: Path) -> bool:
    """Whether another live process of this host writes `temporary` now (its pid is in the
    name): two processes writing one file each finish, and the last rename wins."""
    pid = temporary.name.rpartition("-")[2]
    if not (pid.isascii() and pid.isdigit()) or int(pid) == os.getpid():
        return False
    return alive(int(pid))


def temporary_path(target: Path) -> Path:
    """Where `atomic_write` writes `target` before the rename."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}")


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """`data` as indented JSON with sorted keys, written atomically."""
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def no_space(err: BaseException) -> OSError | None:
    """The full disk's OSError (`NO_SPACE`) behind `err`, or None. torch.save turns one into a
    RuntimeError ("unexpected pos") whose context is the OSError, hence the walk along the chain."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE:
            return seen
        # torch.distributed.checkpoint's CheckpointException: rank -> (exception, traceback)
        for failure in getattr(seen, "failures", {}).values():
            if isinstance(failure, tuple) and (found := no_space(failure[0])) is not None:
                return found
        seen = seen.__cause__ or seen.__context__
    return None


def full_disk_error(err: BaseException) -> LMTrainError | None:
    """One line for any write a full disk stopped (samples.txt, metrics.json, a logger's file),
    or None: the last resort of `lmtrain.utils.task`, after the checkpoint's and the token
    cache's own lines, which name the setting that moves them."""
    if (found := no_space(err)) is None:
        return None
    where = f" {found.filename}" if found.filename else " a file"
    return LMTrainError(
        f"could not write{where} ({os.strerror(found.errno)}): free space on that disk, or "
        "point paths.log_dir (runs) or data.cache_dir (token caches) to a disk with room"
    )
