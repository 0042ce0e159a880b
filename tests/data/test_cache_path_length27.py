"""A data.cache_dir near the file system's path limit (4,096 bytes on Linux) ended in a traceback
quoting the 4,000-character path, and left the refused run's folder: the token cache's paths
under it (its key, its build folder's files) pass the limit even where the folder itself fits.
Now it is one line with the length and what to do, before or during the build."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli


def deep_folder(base: Path, length: int) -> Path:
    """A folder path of `length` characters under `base`, in 200-character names."""
    parts, left = [], length - len(str(base)) - 1
    while left > 0:
        name = "d" * min(200, left - 1 if left > 201 else left)
        parts.append(name)
        left -= len(name) + 1
    folder = base.joinpath(*parts)
    assert abs(len(str(folder)) - length) <= 1, len(str(folder))
    return folder


# 4,040: the cache's own folder (+65) passes the limit at its first look; 3,990: the folder fits
# and the build folder's tokenizer file (+~100) does not, inside the build.
@pytest.mark.parametrize("cache_length", [4040, 3990])
def test_a_cache_dir_too_long_for_its_files_is_one_line(tmp_path: Path, cache_length: int) -> None:
    cache_dir = deep_folder(tmp_path / "c", cache_length)
    run = tmp_path / "run"
    overrides = (f"data.cache_dir={cache_dir}", f"hydra.run.dir={run}")
    out = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", *overrides))
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: data.cache_dir is {len(str(cache_dir)):,} characters long, too long for the "
        "token cache's paths under it (the file system's limit: File name too long): pass a "
        "shorter data.cache_dir (or paths.data_dir)"
    ], out.stderr[-3000:]
    assert not run.exists()  # the refused run's folder is not left behind
    if cache_dir.exists():  # nothing half-built is left: only the build's lock file
        assert [p.suffix for p in cache_dir.iterdir()] == [".lock"]
