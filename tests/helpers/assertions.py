"""What a refused command must look like: exactly one `error: ...` line, no traceback, and the
files it was refused over left as they were (`tree_digest`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError


def one_error_line(stderr: str) -> str:
    """The single `error: ` line of a refused command's stderr (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A non-zero exit, no traceback anywhere, one `error:` line holding every fragment; returns
    that line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    line = one_error_line(result.stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line


def tree_digest(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path, but the names in `skip` (the run
    folder's `.lock` holds the pid of its last holder). A link to a file outside `folder` counts
    by where it points: W&B's `logs/debug-core.log` links to its service's log in ~/.cache,
    named by the second it started, which that service (or another one started in the same
    second) may still write after the command ended."""
    inside = folder.resolve()
    return {
        str(p.relative_to(folder)): (
            f"-> {os.readlink(p)}"
            if p.is_symlink() and not p.resolve().is_relative_to(inside)
            else hashlib.sha256(p.read_bytes()).hexdigest()
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def assert_no_cache_left(cache_dir: Path) -> None:
    """Nothing but lock files: no token cache folder, complete or half-written."""
    leftovers = [p.name for p in cache_dir.iterdir()] if cache_dir.exists() else []
    assert all(name.endswith(".lock") for name in leftovers), leftovers


def refusal(build: Callable[[], object]) -> str:
    """The message of the LMTrainError that `build()` raises: one line."""
    with pytest.raises(LMTrainError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message, message
    return message
