"""callbacks.wandb_model.export_dir shared by runs (set by hand, or fixed in a sweep): a run
replaces only its own previous export there. Another run's export, or a folder of other files,
is refused in one line before training (a red team's second run replaced the first one's export
without a word); a resume of the same run replaces its own; `overwrite_run=true` replaces
another run's export, as it replaces another run's outside checkpoints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

KEY = "callbacks.wandb_model.export_dir"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("wandb-export-dir"))


def logged_run(
    tmp_path: Path, data_dir: Path, corpus: Path, run: Path, shared: Path, *overrides: str
) -> subprocess.CompletedProcess[str]:
    """A tiny CLI run logged offline to W&B with log_model=true, exporting to `shared`."""
    return run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            data_dir,
            "logger=wandb",
            "logger.wandb.log_model=true",
            f"{KEY}={shared}",
            "callbacks.wandb_model.verify=false",
            f"hydra.run.dir={run}",
            *overrides,
            corpus=corpus,
        ),
    )


def exported_from(export: Path) -> Path:
    """The checkpoint the export at `export` was made from (its lmtrain.json)."""
    return Path(json.loads((export / "lmtrain.json").read_text())["ckpt_path"])


def test_another_runs_export_is_refused_before_training(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    models = tmp_path / "models"
    shared = models / "shared"
    first, second = tmp_path / "r5", tmp_path / "r6"
    done = logged_run(tmp_path, data_dir, corpus, first, shared)
    assert done.returncode == 0, done.stderr[-3000:]
    assert exported_from(shared).is_relative_to(first / "checkpoints")
    before = tree_digest(models)  # the export and its offline artifact's hidden snapshot

    refused = logged_run(tmp_path, data_dir, corpus, second, shared, "seed=7")
    line = assert_one_line_error(
        refused, KEY, str(shared), "another run's export", "default", "overwrite_run=true"
    )
    assert str(second / "export") in line, line  # the default it names is this run's own
    assert tree_digest(models) == before
    assert not any((second / "checkpoints").glob("*.ckpt"))

    # A folder of other files is no export to replace, overwrite_run or not.
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me\n")
    third = tmp_path / "r7"
    refused = logged_run(tmp_path, data_dir, corpus, third, notes, "overwrite_run=true")
    assert_one_line_error(refused, KEY, str(notes), "not an lmtrain export", "default")
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    assert not any((third / "checkpoints").glob("*.ckpt"))

    # overwrite_run=true replaces another run's export, as it does another run's checkpoints.
    done = logged_run(tmp_path, data_dir, corpus, second, shared, "seed=7", "overwrite_run=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert exported_from(shared).is_relative_to(second / "checkpoints")


def test_a_resume_replaces_its_own_export(tmp_path: Path, data_dir: Path, corpus: Path) -> None:
    shared = tmp_path / "models" / "shared"
    run = tmp_path / "r5"
    done = logged_run(tmp_path, data_dir, corpus, run, shared)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = shared.stat().st_ino
    resumed = logged_run(
        tmp_path, data_dir, corpus, run, shared, "ckpt_path=last", "trainer.max_steps=6"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    output = resumed.stdout + resumed.stderr
    assert "no model artifact" not in output, output[-3000:]
    assert shared.stat().st_ino != folder  # a new export was renamed into place
    assert exported_from(shared).is_relative_to(run / "checkpoints")


def test_a_moved_run_folder_replaces_its_default_export(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    """The default export_dir is inside the run folder: after a move, its lmtrain.json still
    names the old folder's checkpoint, and the resume was refused as another run's (rev_diff14)."""
    run, moved = tmp_path / "e1", tmp_path / "e1moved"
    done = logged_run(tmp_path, data_dir, corpus, run, run / "export")
    assert done.returncode == 0, done.stderr[-3000:]
    run.rename(moved)
    resumed = logged_run(
        tmp_path, data_dir, corpus, moved, moved / "export", "ckpt_path=last", "trainer.max_steps=6"
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "no model artifact" not in resumed.stdout + resumed.stderr
    assert exported_from(moved / "export").is_relative_to(moved / "checkpoints")
