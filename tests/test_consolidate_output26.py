"""`python -m lmtrain.strategies consolidate --output` inside any sharded checkpoint folder of
the run, not only the one it merges, is refused in one line (red team dist26 #1).

A run replaces its sharded folders whole: `last.ckpt/` at every save, `best-step=…/` when a
better one comes. A file that consolidate wrote into one of them (its own "is a folder" advice
suggested `best-step=….ckpt/consolidated.ckpt`) was deleted by the run's next save without a
word, and `--overwrite` onto a shard or the `.metadata` of another checkpoint destroyed it.
One tiny `trainer=fsdp_cpu` run (2 steps, a validation at step 2) makes the two folders that
every test reads; none of them changes a byte of it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The checkpoints/ folder of a 2-step fsdp_cpu run: `last.ckpt/` and `best-step=2-….ckpt/`,
    both sharded."""
    root = tmp_path_factory.mktemp("consolidate_output26")
    run = root / "run"
    overrides = ["trainer=fsdp_cpu", "data.batch_size=4", "trainer.max_steps=2", "logger=none"]
    overrides += ["callbacks.text_samples=null", f"hydra.run.dir={run}"]
    cli = tiny_cli(root, data_dir, *overrides)
    out = run_cli("train", *cli, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run / "checkpoints"
    assert (folder / "last.ckpt" / "meta.pt").is_file() and best_of(folder).is_dir()
    return folder


def best_of(checkpoints: Path) -> Path:
    (best,) = checkpoints.glob("best-step=*.ckpt")
    return best


def consolidate_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("strategies", "consolidate", *map(str, args), timeout=120)


def test_output_inside_another_sharded_checkpoint_is_refused(checkpoints: Path) -> None:
    """Into the best folder while merging last.ckpt, and into last.ckpt while merging the best
    one: named, with the default beside the merged folder as the way out (also the "is a folder"
    refusal, which suggested a file inside the best folder)."""
    last, best = checkpoints / "last.ckpt", best_of(checkpoints)
    before = tree_digest(checkpoints)
    shard = next(best.glob("*.distcp"))
    cases = [
        (last, best, best / "consolidated.ckpt", ()),
        (last, best, best, ()),  # a folder: its advice was best/consolidated.ckpt
        (last, best, best / ".metadata", ("--overwrite",)),
        (last, best, best / "meta.pt", ("--overwrite",)),
        (last, best, shard, ("--overwrite",)),
        (last, best, best / "new" / "merged.ckpt", ()),  # a folder the write would create
        (best, last, last / "best.consolidated.ckpt", ()),
    ]
    for merged, holder, output, extra in cases:
        out = consolidate_cli(merged, "--output", output, *extra)
        default = merged.with_name(merged.name.removesuffix(".ckpt") + ".consolidated.ckpt")
        line = assert_one_line_error(
            out,
            f"the output '{output}' is inside the sharded checkpoint '{holder}'",
            "which the run's next save replaces whole: pass a file outside it",
            f"--output '{default}' (the default)",
        )
        assert f"{holder}/" not in line.split("replaces whole")[1], line
    assert tree_digest(checkpoints) == before
    assert not list(checkpoints.glob("*.consolidated.ckpt*"))


def test_a_link_or_a_folder_with_only_dcp_metadata_counts(
    checkpoints: Path, tmp_path: Path
) -> None:
    """A path through a link into a sharded folder; a DCP folder without meta.pt (a save still
    being written, or a copy that lost it) is replaced whole all the same."""
    last = checkpoints / "last.ckpt"
    link = tmp_path / "link"
    link.symlink_to(best_of(checkpoints), target_is_directory=True)
    partial = shutil.copytree(best_of(checkpoints), tmp_path / "partial.ckpt")
    (partial / "meta.pt").unlink()
    before = tree_digest(checkpoints), tree_digest(partial)
    for output, holder in ((link / "x.ckpt", best_of(checkpoints)), (partial / "x.ckpt", partial)):
        out = consolidate_cli(last, "--output", output)
        assert_one_line_error(out, f"is inside the sharded checkpoint '{holder}'")
    assert (tree_digest(checkpoints), tree_digest(partial)) == before


def test_the_folder_advice_outside_any_sharded_checkpoint_is_followed(
    checkpoints: Path, tmp_path: Path
) -> None:
    """checkpoints/ itself is no sharded folder: its advice, a file in it, is written."""
    work = shutil.copytree(checkpoints, tmp_path / "checkpoints", symlinks=True)
    out = consolidate_cli(work / "last.ckpt", "--output", work)
    line = assert_one_line_error(out, f"the output '{work}' is a folder")
    advised = work / "consolidated.ckpt"
    assert f"'{advised}'" in line, line
    done = consolidate_cli(work / "last.ckpt", "--output", advised)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(advised) and advised.is_file()
