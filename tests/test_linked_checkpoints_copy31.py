"""A run folder whose `checkpoints/` is a link to scratch storage, copied (`cp -a`) to fork it:
the copy's link leads to the original run's checkpoints, and resuming the copy is refused
before anything there is written or deleted; the original resumes through its own link.

Red team (path31, finding 1): `resume=<copy>` wrote through the copied link, replaced the
original's `last.ckpt` and deleted its best checkpoint (exit 0, no warning), and the original
then resumed the copy's training.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmtrain.utils.safe_load import saved_step
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus


def linked_run_in(root: Path, data_dir: Path) -> tuple[Path, Path, list[str]]:
    """(run folder, scratch folder, its command's overrides but its folder): a finished 2-step
    run under `root` whose `checkpoints/` was moved to scratch storage and linked back, as
    docs/runs.md allows."""
    run, scratch = root / "runs" / "orig", root / "scratch" / "orig"
    corpus = one_file_corpus(root / "corpus")
    cli = tiny_cli(root, data_dir, "logger=csv", corpus=corpus)
    out = run_cli("train", *cli, f"hydra.run.dir={run}", "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    scratch.parent.mkdir()
    shutil.move(run / "checkpoints", scratch)
    (run / "checkpoints").symlink_to(scratch)
    return run, scratch, cli


@pytest.fixture(scope="module")
def linked_run(
    tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> tuple[Path, Path, list[str]]:
    """`linked_run_in`, for the tests that leave it as it was."""
    return linked_run_in(tmp_path_factory.mktemp("linked_ckpts"), data_dir)


def fork(run: Path, tmp_path: Path) -> Path:
    """A copy of `run` as `cp -a` makes it: links copied as links."""
    copy = tmp_path / "fork"
    shutil.copytree(run, copy, symlinks=True)
    return copy


@pytest.mark.parametrize("how", ["resume", "ckpt_path=last"])
def test_resuming_a_copy_whose_checkpoints_link_is_the_originals_is_refused(
    linked_run: tuple[Path, Path, list[str]], tmp_path: Path, how: str
) -> None:
    run, scratch, cli = linked_run
    copy = fork(run, tmp_path)
    before = tree_digest(scratch)
    copy_before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    named = [*cli, "ckpt_path=last", f"hydra.run.dir={copy}"]
    command = [f"resume={copy}"] if how == "resume" else named

    out = run_cli("train", *command, "trainer.max_steps=4")

    key = "resume" if how == "resume" else "hydra.run.dir"
    assert_one_line_error(
        out,
        f"{key}={copy} holds a symbolic link checkpoints -> {scratch}",
        f"the checkpoints of run {run}",
        "with a folder of its own",
        f"ckpt_path={scratch.resolve() / 'last.ckpt'}",
    )
    assert tree_digest(scratch) == before  # its last.ckpt and best checkpoint as they were
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == copy_before


def test_the_original_resumes_through_its_own_link_and_so_does_it_moved(
    tmp_path: Path, data_dir: Path
) -> None:
    """The run that saved the checkpoints behind the link is theirs, in its folder or moved
    (the stored run folder is gone: no other run's)."""
    run, scratch, _ = linked_run_in(tmp_path, data_dir)
    out = run_cli("train", f"resume={run}", "trainer.max_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == 3
    moved = tmp_path / "moved"
    shutil.move(run, moved)
    out = run_cli("train", f"resume={moved}", "trainer.max_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == 4
