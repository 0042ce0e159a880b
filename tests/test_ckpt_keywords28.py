"""Red team fault28's findings 3 and 4: `ckpt_path=best hydra.run.dir=<a finished run>` called
the run's own folder "another run" and offered overwrite_run=true (which replaces it) before
naming its best checkpoint; `ckpt_path=/dev/null` (or a FIFO) was said "does not exist"."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny run that ended with its last.ckpt and a best-*.ckpt in root/run1."""
    root = tmp_path_factory.mktemp("keywords28")
    run = root / "run1"
    done = run_cli("train", *tiny_cli(root, data_dir, "logger=csv"), f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    return run


@pytest.mark.parametrize("keyword", ["best", "hpc"])
def test_lightning_keyword_in_a_finished_runs_folder_names_its_best_checkpoint(
    finished_run: Path, data_dir: Path, keyword: str
) -> None:
    run = finished_run
    before = tree_digest(run, skip=(".lock", "train.log"))
    cli = tiny_cli(run.parent, data_dir, "logger=csv")
    out = run_cli("train", *cli, f"ckpt_path={keyword}", f"hydra.run.dir={run}")
    best = max((run / "checkpoints").glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime_ns)
    line = assert_one_line_error(out, f"ckpt_path={keyword} is Lightning's name")
    assert "another run" not in line and "overwrite_run" not in line, line
    if keyword == "best":
        assert f"ckpt_path='{best.resolve()}'" in line or f"ckpt_path='{best}'" in line, line
    assert tree_digest(run, skip=(".lock", "train.log")) == before


def special_paths(tmp_path: Path) -> list[Path]:
    """/dev/null (a device) and a FIFO: both exist, and neither is a file nor a folder."""
    fifo = tmp_path / "pipe.ckpt"
    os.mkfifo(fifo)
    return [Path("/dev/null"), fifo]


def test_train_from_a_device_or_fifo_says_it_is_no_regular_file(
    tmp_path: Path, data_dir: Path
) -> None:
    for path in special_paths(tmp_path):
        out = run_cli("train", *tiny_cli(tmp_path, data_dir), f"ckpt_path={path}")
        line = assert_one_line_error(out, f"ckpt_path='{path}' is not a regular file")
        assert "does not exist" not in line and "pass a .ckpt file" in line, line
    assert not list((tmp_path / "logs").glob("**/checkpoints"))


def test_eval_of_a_device_or_fifo_says_it_is_no_regular_file(tmp_path: Path) -> None:
    for path in special_paths(tmp_path):
        out = run_cli("eval", f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}")
        line = assert_one_line_error(out, f"ckpt_path='{path}' is not a regular file")
        assert "does not exist" not in line, line
