"""Going back to an earlier checkpoint of a run's own folder asks for `overwrite_run=true`.

Red team: `ckpt_path=<run>/checkpoints/step6.ckpt hydra.run.dir=<run>` replaced the run's
step-12 last.ckpt, samples and metrics with nothing but a warning about a missing best checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from lmtrain.callbacks.resume_run import has_last_checkpoint, latest_run
from lmtrain.utils.safe_load import saved_step
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus


@pytest.fixture(scope="module")
def run_with_an_earlier_save(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A run trained to step 4, with a copy of its step-2 last.ckpt in checkpoints/step2.ckpt."""
    root = tmp_path_factory.mktemp("earlier")
    run = root / "run"
    corpus = one_file_corpus(root / "corpus")
    cli = tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    assert run_cli("train", *cli, "trainer.max_steps=2").returncode == 0
    shutil.copy(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "step2.ckpt")
    out = run_cli("train", *cli, "ckpt_path=last", "trainer.max_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def rewind(run: Path, tmp_path: Path, data_dir: Path, *overrides: str):
    corpus = one_file_corpus(tmp_path / "corpus")
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    step2 = run / "checkpoints" / "step2.ckpt"
    return run_cli("train", *cli, f"ckpt_path={step2}", "trainer.max_steps=4", *overrides)


def test_an_earlier_checkpoint_of_the_runs_own_folder_is_refused_leaving_the_run_as_it_was(
    run_with_an_earlier_save: Path, tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_with_an_earlier_save, run)
    before = tree_digest(run, skip=(".lock",))
    out = rewind(run, tmp_path, data_dir)
    assert_one_line_error(
        out,
        f"ckpt_path={run / 'checkpoints' / 'step2.ckpt'} (step 2) would go on in "
        f"hydra.run.dir={run}, whose checkpoints/last.ckpt (step 4)",
        "pass overwrite_run=true to go back to that step in this folder",
    )
    assert tree_digest(run, skip=(".lock",)) == before


def test_overwrite_run_goes_back_to_the_earlier_checkpoint(
    run_with_an_earlier_save: Path, tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_with_an_earlier_save, run)
    out = rewind(run, tmp_path, data_dir, "overwrite_run=true", "trainer.max_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(run / "checkpoints" / "last.ckpt") == 3


def test_last_without_last_ckpt_refuses_a_newest_file_that_is_not_the_furthest(
    run_with_an_earlier_save: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Red team: a run folder copied without its times, no last.ckpt: `ckpt_path=last` took the
    newest file by time, step 2 of 4, retrained and overwrote the later saves, exit code 0."""
    run = tmp_path / "run"
    shutil.copytree(run_with_an_earlier_save, run)
    checkpoints = run / "checkpoints"
    (checkpoints / "last.ckpt").rename(checkpoints / "step4.ckpt")
    later = (checkpoints / "step4.ckpt").stat().st_mtime + 60
    os.utime(checkpoints / "step2.ckpt", (later, later))  # as a copy in another order leaves it
    before = tree_digest(run, skip=(".lock", "train.log"))
    corpus = one_file_corpus(tmp_path / "corpus")
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    out = run_cli("train", *cli, "ckpt_path=last", "trainer.max_steps=6")
    assert_one_line_error(
        out,
        f"{checkpoints} has no last.ckpt, and its newest file step2.ckpt (step 2) is not its "
        "furthest, step4.ckpt (step 4;",
        f"pass the checkpoint to resume from, ckpt_path=<file> hydra.run.dir={run} (without "
        "resume=)",
    )
    assert tree_digest(run, skip=(".lock", "train.log")) == before  # the log has the refusal


def test_resume_latest_ranks_a_folder_of_no_clear_newest_without_refusing(tmp_path: Path) -> None:
    """rev_diff13: the refusal above, raised while `resume=latest` scanned every run folder,
    stopped it over an old folder it would not have picked."""
    runs = tmp_path / "logs" / "train" / "runs"
    for name, step in (("step10.ckpt", 10), ("step5.ckpt", 5)):  # written in this order
        (runs / "a" / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": step}, runs / "a" / "checkpoints" / name)
    (runs / "b" / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 3}, runs / "b" / "checkpoints" / "last.ckpt")
    os.utime(runs / "a" / "checkpoints" / "step10.ckpt", (1, 1))
    assert has_last_checkpoint(runs / "a")
    assert latest_run(tmp_path / "logs", "train") == runs / "b"
