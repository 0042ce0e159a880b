"""A token cache build's folder (`<key>.tmp-<host>-<pid>`) is another build's leftover only when
nobody holds that key's lock: two containers of one host name (Docker's --net=host, Kubernetes'
hostNetwork) share a cache folder but not their pids, and the sweep of one took the other's live
build for an interrupted one (its pid is missing here) and deleted it mid-way; that build then
died with `FileNotFoundError: ....tmp-vm-703/train.bin`. A lock (POSIX record lock) is seen from
every PID namespace, a pid is not.

The other container's builder is a process here that takes its key's lock as `build_or_load`
does and holds a build folder named with a pid that no process of this namespace has.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load, fingerprint
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.utils import locks
from tests.helpers import ROOT
from tests.helpers.corpora import one_file_corpus

CHAR = TokenizerSettings("char")

# Takes `<cache>/<key>.lock` (as build_or_load does: lmtrain.utils.locks), writes its build
# folder under another namespace's pid, says so, and builds on until it is killed.
BUILDER = textwrap.dedent(
    """
    import socket, sys, time
    from pathlib import Path
    from lmtrain.utils import locks

    cache, key, pid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    release = locks.acquire(cache / f"{key}.lock")
    tmp = cache / f"{key}.tmp-{socket.gethostname()}-{pid}"
    (tmp / "tokenizer").mkdir(parents=True)
    (tmp / "train.bin").write_bytes(bytes(4096))
    print("building", flush=True)
    time.sleep(600)
    """
)


def source(tmp_path: Path, name: str, seed: int) -> TextFilesSource:
    return TextFilesSource(str(one_file_corpus(tmp_path / name, seed=seed)))


def missing_pid() -> int:
    """A pid that no process of this namespace has (a finished child's, not yet reused)."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    assert not locks.alive(done.pid)
    return done.pid


@pytest.fixture
def other_container(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """The live build of another container: its process, and its build folder."""
    cache = tmp_path / "cache"
    cache.mkdir()
    key = fingerprint(source(tmp_path, "theirs", seed=1), CHAR)
    pid = missing_pid()
    builder = subprocess.Popen(
        [sys.executable, "-c", BUILDER, str(cache), key, str(pid)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert builder.stdout is not None and builder.stdout.readline() == "building\n"
        yield builder, cache / f"{key}.tmp-{socket.gethostname()}-{pid}"
    finally:
        builder.kill()
        builder.wait()


def test_a_build_whose_lock_is_held_is_left_alone_whatever_its_pid(
    tmp_path: Path,
    other_container: tuple[subprocess.Popen[str], Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    builder, theirs = other_container
    cache = theirs.parent
    files = sorted(p.relative_to(theirs) for p in theirs.rglob("*"))
    with caplog.at_level(logging.INFO, logger="lmtrain.data.token_cache"):
        ours = build_or_load(cache, source(tmp_path, "ours", seed=2), CHAR, workers=1)
    assert ours.is_dir() and builder.poll() is None
    assert theirs.is_dir() and sorted(p.relative_to(theirs) for p in theirs.rglob("*")) == files
    assert str(theirs) not in caplog.text

    # Killed, the builder's lock goes with it: the next build of any settings removes its
    # folder, as it removes any other interrupted build's.
    builder.kill()
    builder.wait()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmtrain.data.token_cache"):
        build_or_load(cache, source(tmp_path, "third", seed=3), CHAR, workers=1)
    assert not theirs.exists()
    assert f"Removing {theirs}, left by an interrupted build" in caplog.text
    assert ours.is_dir()  # a complete cache is no leftover
