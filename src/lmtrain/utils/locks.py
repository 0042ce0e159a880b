"""An exclusive lock on a file that its holder keeps until it lets go or dies, on any file system.

The lock is a POSIX record lock (`fcntl.lockf`), which the kernel drops when its holder dies,
even by SIGKILL. Not `flock`: an flock belongs to the open file, which forked workers (tokenizer
processes, data loaders) inherit, so a holder killed while its workers linger would keep
everyone else waiting. Some cluster file systems (NFS without lockd, some FUSE and parallel file
systems) refuse POSIX locks; there the lock is a file created with O_EXCL beside it
(`<name>.owner`), holding the owner's pid and host, removed at exit; one left by a dead process
of this host is taken over (other hosts' cannot be checked: the holder's message names the file).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

from lmtrain.errors import LMTrainError

# What lockf raises on a file system without POSIX locks.
NO_POSIX_LOCKS = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})
OWNER_SUFFIX = ".owner"
RUN_FOLDER_LOCK = ".lock"  # in a run's (or a sweep's) folder, held while it runs
# Seconds between tries while waiting for an owner-file lock (POSIX locks wait in the kernel).
POLL_S = 0.5

Release = Callable[[], None]


class LockHeld(Exception):
    """Another live process holds the lock: its pid and host (as far as known), and the owner
    file to delete by hand if that process is gone on another host."""

    def __init__(self, pid: str, host: str, owner_file: Path | None = None) -> None:
        super().__init__(f"held by pid {pid} on host {host}")
        self.pid, self.host, self.owner_file = pid, host, owner_file


def acquire(path: Path, wait: bool = False) -> Release:
    """Lock `path` for this process; return the function that lets go.

    `wait=False` raises LockHeld at once if another process holds it; `wait=True` waits.
    """
    fd = open_lock_file(path)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in NO_POSIX_LOCKS:
            os.close(fd)
            return _acquire_owner_file(path.with_name(path.name + OWNER_SUFFIX), wait)
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        if not wait:
            holder = os.read(fd, 200).decode(errors="replace").split()  # `<pid> <host>`
            os.close(fd)
            pid, host = [*holder, "?", "?"][:2]
            raise LockHeld(pid, host) from None
        fcntl.lockf(fd, fcntl.LOCK_EX)  # the kernel wakes us when the holder lets go or dies
    with contextlib.suppress(OSError):  # who holds it, for others' messages (a full disk is fine)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return lambda: os.close(fd)  # closing drops the lock


def open_lock_file(path: Path) -> int:
    """Open (or create) lock file `path` for reading and writing, refusing a link or a non-file.

    A run folder is untrusted (copied from a colleague, shared): a `.lock` that is a symbolic link
    would have the holder truncate and write the file it points to, anywhere the user can write.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise LMTrainError(
            f"{path} is a symbolic link (to {os.readlink(path)}), where lmtrain keeps a lock file "
            "of its own: delete the link and run again"
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LMTrainError(
            f"{path} is not a file, where lmtrain keeps a lock file of its own: move it away and "
            "run again"
        )
    return fd


def lock_folder(folder: Path, key: str = "hydra.run.dir", what: str = "run") -> Release:
    """Lock run folder `folder` (named by setting `key`) for this process, or refuse in one line
    naming the live holder; return the function that unlocks. `what` holds it: a run, or a sweep
    (its folder, beside its jobs' own locks)."""
    try:
        return acquire(folder / RUN_FOLDER_LOCK)
    except LockHeld as held:
        stale = f" (if no {what} is left on {held.host}, delete {held.owner_file})"
        raise LMTrainError(
            f"{key}={folder} is in use by a live {what} (pid {held.pid} on host "
            f"{held.host}): wait for it or pass another {key}" + (stale if held.owner_file else "")
        ) from None


def _acquire_owner_file(path: Path, wait: bool) -> Release:
    """The lock where POSIX locks are missing: `path` created with O_EXCL (a stale file of a dead
    process of this host is taken over; two processes taking over one stale file at once could
    both succeed: this is the fallback)."""
    host = socket.gethostname()
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            pid, owner_host = read_owner(path)
            if owner_host == host and pid is not None and not alive(pid):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not wait:
                raise LockHeld(str(pid or "?"), owner_host or "?", path) from None
            time.sleep(POLL_S)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()} {host}\n")

    def release() -> None:
        atexit.unregister(release)
        if read_owner(path) == (os.getpid(), host):
            path.unlink(missing_ok=True)

    atexit.register(release)
    return release


def held_elsewhere(path: Path) -> bool:
    """Whether another live process holds the lock on `path`, asked without taking it: a shared
    lock tried on a read-only descriptor (closed at once, which drops it), so the holder's file
    is left as it is. Without POSIX locks, whether its owner file names a live process."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO would block
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):
            return True
        if err.errno not in NO_POSIX_LOCKS:
            return False
        pid, host = read_owner(path.with_name(path.name + OWNER_SUFFIX))
        return pid is not None and (host != socket.gethostname() or alive(pid))
    finally:
        os.close(fd)
    return False


def read_owner(path: Path) -> tuple[int | None, str | None]:
    """(pid, host) written in an owner file, or (None, None)."""
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None, None


def alive(pid: int) -> bool:
    """Whether a process with this pid runs on this host (signal 0 sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid at all: leave what it owns alone
    return True
