"""`ckpt_path=last` that would go back behind the step a run's metrics.json reports is refused.

Red team: a run resumed with `callbacks.model_checkpoint=null` trained on to step 4 and wrote its
metrics.json there, leaving checkpoints/last.ckpt at step 2; `ckpt_path=last` (or `resume=`) then
went back to step 2 without a word and rewrote steps 3-4's CSV rows, samples and metrics.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmtrain.utils.safe_load import saved_step
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus


def cli_for(root: Path, data_dir: Path, run: Path) -> list[str]:
    corpus = one_file_corpus(root / "corpus")
    return tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)


def ended_step(run: Path) -> float:
    return json.loads((run / "metrics.json").read_text())["trainer/global_step"]


@pytest.fixture(scope="module")
def run_past_its_last_save(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A run ended at step 2 (last.ckpt and metrics.json at 2), resumed without checkpoints
    to step 4: metrics.json at 4, last.ckpt still at 2."""
    root = tmp_path_factory.mktemp("rewind")
    run = root / "run"
    cli = cli_for(root, data_dir, run)
    assert run_cli("train", *cli, "trainer.max_steps=2").returncode == 0
    out = run_cli(  # metrics.json at last.ckpt's step: a plain resume, not refused
        "train", *cli, "ckpt_path=last", "callbacks.model_checkpoint=null", "trainer.max_steps=4"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(run / "checkpoints" / "last.ckpt") == 2 and ended_step(run) == 4
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def test_last_behind_metrics_json_is_refused_leaving_the_run_as_it_was(
    run_past_its_last_save: Path, tmp_path: Path, data_dir: Path
) -> None:
    run = copy_of(run_past_its_last_save, tmp_path)
    before = tree_digest(run, skip=(".lock",))
    out = run_cli(
        "train", *cli_for(tmp_path, data_dir, run), "ckpt_path=last", "trainer.max_steps=6"
    )
    assert out.returncode == 1
    assert_one_line_error(
        out,
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'} is step 2, behind the metrics.json of "
        f"hydra.run.dir={run} (step 4, where that run ended)",
        "pass overwrite_run=true to go back to step 2 in this folder, or pass "
        "ckpt_path=<a checkpoint of a later step>",
    )
    assert tree_digest(run, skip=(".lock",)) == before


def test_resume_of_a_run_behind_its_metrics_json_is_refused(
    run_past_its_last_save: Path, tmp_path: Path
) -> None:
    run = copy_of(run_past_its_last_save, tmp_path)
    before = tree_digest(run, skip=(".lock",))
    out = run_cli("train", f"resume={run}")  # the run's own config, data and all
    assert out.returncode == 1
    assert_one_line_error(out, "is step 2, behind the metrics.json of", "overwrite_run=true")
    assert tree_digest(run, skip=(".lock",)) == before


def test_overwrite_run_goes_back_as_the_refusal_says(
    run_past_its_last_save: Path, tmp_path: Path, data_dir: Path
) -> None:
    run = copy_of(run_past_its_last_save, tmp_path)
    cli = cli_for(tmp_path, data_dir, run)
    assert run_cli("train", *cli, "ckpt_path=last", "trainer.max_steps=6").returncode == 1
    out = run_cli("train", *cli, "ckpt_path=last", "trainer.max_steps=6", "overwrite_run=true")
    assert out.returncode == 0, out.stderr[-3000:]
    assert saved_step(run / "checkpoints" / "last.ckpt") == 6 and ended_step(run) == 6
