"""A run folder copied from someone else may hold links: lmtrain never writes through one.

Red team: a `.lock` linked to a user's file was truncated and overwritten by `resume=`, and a
linked `train.log` got the resumed run's whole log appended.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils import locks
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

VICTIM_TEXT = "precious\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished tiny run with the CSV logger (2 steps)."""
    root = tmp_path_factory.mktemp("linked")
    run = root / "run"
    corpus = one_file_corpus(root / "corpus")
    cli = tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    out = run_cli("train", *cli, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    return run


@pytest.mark.parametrize("name", [".lock", "train.log", "csv/metrics.csv", ".hydra/config.yaml"])
def test_resuming_a_run_whose_file_is_a_link_is_refused_and_writes_nothing_through_it(
    trained: Path, tmp_path: Path, name: str
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained, run, symlinks=True)
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(victim)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    out = run_cli("train", f"resume={run}", "trainer.max_steps=4")
    assert_one_line_error(
        out, f"holds a symbolic link {name} -> {victim}", "replace it with a copy of what it"
    )
    assert victim.read_text() == VICTIM_TEXT
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def test_a_link_to_a_folder_in_the_run_folder_is_left_alone(trained: Path, tmp_path: Path) -> None:
    """Checkpoints on scratch storage, linked into the run folder, are a user's choice."""
    run = tmp_path / "copy"
    shutil.copytree(trained, run, symlinks=True)
    scratch = tmp_path / "scratch"
    shutil.move(run / "checkpoints", scratch)
    (run / "checkpoints").symlink_to(scratch)
    out = run_cli("train", f"resume={run}", "trainer.max_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (scratch / "last.ckpt").is_file()


def test_the_lock_is_taken_on_a_file_of_its_own_never_through_a_link(tmp_path: Path) -> None:
    """The token cache's and the sweep folder's locks too (`locks.acquire`)."""
    victim = tmp_path / "victim.txt"
    victim.write_text(VICTIM_TEXT)
    (tmp_path / "linked.lock").symlink_to(victim)
    (tmp_path / "dangling.lock").symlink_to(tmp_path / "created-elsewhere")
    os.mkfifo(tmp_path / "fifo.lock")
    for name in ("linked.lock", "dangling.lock"):
        linked = rf"{re.escape(name)} is a symbolic link .*delete the link"
        with pytest.raises(LMTrainError, match=linked):
            locks.acquire(tmp_path / name)
    with pytest.raises(LMTrainError, match=r"fifo\.lock is not a file"):
        locks.acquire(tmp_path / "fifo.lock")
    assert victim.read_text() == VICTIM_TEXT
    assert not (tmp_path / "created-elsewhere").exists()
    assert not locks.held_elsewhere(tmp_path / "fifo.lock")  # asked without blocking


def test_a_new_run_whose_checkpoints_link_points_to_a_folder_still_to_be_made_trains(
    tmp_path: Path, data_dir: Path
) -> None:
    """`run/checkpoints -> /scratch/...` made before the scratch folder (review): refused as a
    file link; and a linked README beside it is the user's, not written by the run."""
    run, scratch = tmp_path / "run", tmp_path / "scratch" / "run1"
    run.mkdir()
    (run / "checkpoints").symlink_to(scratch)
    (tmp_path / "notes.md").write_text(VICTIM_TEXT)
    (run / "README.md").symlink_to(tmp_path / "notes.md")
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (scratch / "last.ckpt").is_file()
    assert (tmp_path / "notes.md").read_text() == VICTIM_TEXT
