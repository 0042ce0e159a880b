#!/usr/bin/env python
"""Delete the run folders under logs/ (`make clean-logs`), but not those of runs still going.

logs/ is $PROJECT_ROOT/logs when that is set (as the runs' `paths.log_dir`), else the current
folder's; a logs/ that is a link (to a scratch disk) is followed. Only logs/<task>/runs/ and
logs/<task>/multiruns/ are emptied, folder by folder, then removed when empty (one that is a
link is removed, not what it points to: as `rm -rf` did); logs/bench/ and
logs/gpu_check/ (results) and anything else under logs/ (a corpus kept there) stay.

A run holds a lock on `.lock` in its folder while it runs, and so do a sweep (in its folder) and
each of its jobs (lmtrain.utils.locks). A run or sweep folder in which a live process holds one
is kept and named, with the holder, in one line: deleting it under a run killed the run with a
traceback. These are POSIX record locks, which a shell's `flock` cannot see: hence Python. A
folder is deleted under its own lock, so a run resumed into it meanwhile is refused, not lost.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils import locks

# Folders under logs/ that hold results, not runs (the benchmarks', the GPU check's).
KEPT = ("bench", "gpu_check")
RUN_CONTAINERS = ("runs", "multiruns")


def live_holder(folder: Path) -> str | None:
    """'pid N on host H' of a live process that holds a run-folder lock in `folder` or below (a
    sweep's own and its jobs'), or None. Links inside are not followed."""
    for parent, _dirs, files in os.walk(folder):
        if locks.RUN_FOLDER_LOCK not in files:
            continue
        lock = Path(parent, locks.RUN_FOLDER_LOCK)
        if locks.held_elsewhere(lock):
            pid, host = locks.read_owner(lock)  # the holder writes `<pid> <host>` into it
            if pid is None:  # a file system without POSIX locks: its owner file says it
                pid, host = locks.read_owner(lock.with_name(lock.name + locks.OWNER_SUFFIX))
            return f"pid {pid or '?'} on host {host or '?'}"
    return None


def delete(entry: Path) -> str | None:
    """Delete run folder `entry` (a link or a file: itself, not what it points to) unless a live
    process holds it; None when deleted, else why it stays."""
    if entry.is_symlink() or not entry.is_dir():
        entry.unlink()
        return None
    holder = live_holder(entry)
    if holder is not None:
        return f"in use by a live run or sweep ({holder}): run make clean-logs again once it ends"
    try:
        release = locks.acquire(entry / locks.RUN_FOLDER_LOCK)
    except locks.LockHeld as held:  # a run started (or resumed) there since the look above
        return f"in use by a live run or sweep (pid {held.pid} on host {held.host})"
    except LMTrainError:  # a `.lock` that is a link or a folder: no run of ours can hold it
        release = None
    try:
        shutil.rmtree(entry)
    finally:
        if release is not None:
            release()
    return None


def clean_container(container: Path) -> bool:
    """Delete every run folder in `container` (logs/<task>/runs or multiruns) that no live
    process holds, then `container` itself if nothing is left; print what went, and each kept
    folder with why. False when a folder could not be deleted."""
    deleted, ok = [], True
    for entry in sorted(container.iterdir()):
        try:
            kept = delete(entry)
        except OSError as err:
            print(
                f"error: {entry} cannot be deleted ({err.strerror}): delete it by hand",
                file=sys.stderr,
            )
            ok = False
            continue
        if kept is None:
            deleted.append(entry)
        else:
            print(f"kept {entry}: {kept}")
    try:
        container.rmdir()
    except OSError:  # something kept, or a run started meanwhile: name what went
        for entry in deleted:
            print(entry)
        return ok
    print(container)
    return ok


def clean_logs(logs: Path) -> bool:
    """Empty logs/<task>/runs and logs/<task>/multiruns under `logs` but for live runs' folders,
    remove each left empty, then its task folder if empty. False when one could not be deleted."""
    ok = True
    for task in sorted(logs.iterdir()):
        if task.name in KEPT or not task.is_dir():
            continue
        containers = [task / name for name in RUN_CONTAINERS if (task / name).is_dir()]
        for container in containers:
            if container.is_symlink():  # to a scratch disk: the link goes, not what it holds
                container.unlink()
                print(container)
                continue
            ok = clean_container(container) and ok
        if containers and not task.is_symlink():
            with contextlib.suppress(OSError):  # only when empty: the user's files beside runs/
                task.rmdir()
    return ok


def main(argv: list[str] | None = None) -> int:
    """Clean the logs/ that $PROJECT_ROOT (or the current folder) holds; exit status 1 when a
    folder could not be deleted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.parse_args(argv)
    logs = Path(os.environ.get("PROJECT_ROOT") or ".") / "logs"
    if not logs.is_dir():
        print(f"no {logs} folder: nothing to delete")
        return 0
    return 0 if clean_logs(logs) else 1


if __name__ == "__main__":
    sys.exit(main())
