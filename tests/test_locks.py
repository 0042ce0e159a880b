"""The lock run folders and token caches share: a POSIX lock held by a real process, and the O_EXCL
owner file that replaces it where a file system has no POSIX locks.

No file system without POSIX locks exists on this machine, so lockf's refusal (ENOLCK) is
simulated where a test needs it; every lock file is real and held by real processes.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.utils import locks
from tests.helpers import ROOT
from tests.helpers.corpora import one_file_corpus


def hold_in_child(path: Path, owner_file: bool) -> subprocess.Popen[str]:
    """A process that holds the lock on `path` (POSIX, or the owner file) until killed."""
    grab = "locks._acquire_owner_file(path, False)" if owner_file else "locks.acquire(path)"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; from lmtrain.utils import locks\n"
            f"path = Path({str(path)!r}); {grab}; print('held', flush=True); time.sleep(600)",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def no_posix_locks(*_: object) -> None:
    raise OSError(errno.ENOLCK, "No locks available")


def test_a_posix_lock_is_refused_while_held_and_free_once_its_holder_is_killed(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".lock"
    holder = hold_in_child(path, owner_file=False)
    try:
        with pytest.raises(locks.LockHeld) as held:
            locks.acquire(path)
        assert held.value.pid == str(holder.pid) and held.value.host == socket.gethostname()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    locks.acquire(path)()  # the kernel dropped it with its holder


def test_owner_file_is_refused_while_its_owner_lives_and_taken_over_once_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, owner = tmp_path / ".lock", tmp_path / f".lock{locks.OWNER_SUFFIX}"
    holder = hold_in_child(owner, owner_file=True)
    monkeypatch.setattr(locks.fcntl, "lockf", no_posix_locks)
    try:
        with pytest.raises(locks.LockHeld) as held:
            locks.acquire(path)
        assert held.value.pid == str(holder.pid) and held.value.owner_file == owner
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL left the file behind: its owner is dead on this host, so it is taken over.
    assert owner.read_text().split()[0] == str(holder.pid)
    release = locks.acquire(path)
    assert owner.read_text().split() == [str(os.getpid()), socket.gethostname()]
    release()
    assert not owner.exists()


def test_token_cache_builds_where_posix_locks_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(locks.fcntl, "lockf", no_posix_locks)
    source = TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))
    folder = build_or_load(tmp_path / "cache", source, TokenizerSettings("char"), workers=1)
    assert (folder / "train.bin").stat().st_size > 0
    assert not list((tmp_path / "cache").glob(f"*{locks.OWNER_SUFFIX}"))  # released


def test_a_build_folder_named_by_a_number_no_pid_can_be_is_left_alone(tmp_path: Path) -> None:
    """`<key>.tmp-<host>-<digits>` of another setting: digits past any pid's range raised
    OverflowError from os.kill; such a folder is not a dead build of ours, so it stays."""
    source = TextFilesSource(str(one_file_corpus(tmp_path / "corpus")))
    stranger = tmp_path / "cache" / f"{'0' * 64}.tmp-{socket.gethostname()}-{'9' * 30}"
    stranger.mkdir(parents=True)
    folder = build_or_load(tmp_path / "cache", source, TokenizerSettings("char"), workers=1)
    assert (folder / "train.bin").stat().st_size > 0
    assert stranger.is_dir()
    assert locks.alive(os.getpid()) and locks.alive(2**70)
