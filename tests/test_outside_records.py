"""A run writes its records where its settings put them, and replaces none of another run's.

Red team: `callbacks.text_samples.dirpath=<another run>` replaced that run's samples.txt (and
`+callbacks.text_samples.filename=<a file of the user's>` the user's file), `logger.csv.save_dir=
<another run>` its metrics history, a checkpoint `filename` with `../` another run's best
checkpoint, and `filename=last` the run's own best checkpoint: each with exit code 0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

LOCK = (".lock",)


@pytest.fixture(scope="module")
def other_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """(run folder, corpus) of a finished tiny run with the CSV logger and text samples."""
    root = tmp_path_factory.mktemp("other_run")
    corpus = one_file_corpus(root / "corpus")
    run = root / "run"
    cli = tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    out = run_cli("train", *cli, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "samples.txt").stat().st_size > 0
    return run, corpus


def new_run(tmp_path: Path, data_dir: Path, corpus: Path, *overrides: str):
    run = tmp_path / "new"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    return run_cli("train", *cli, "trainer.max_steps=2", *overrides)


@pytest.mark.parametrize(
    ("setting", "record"),
    [
        ("callbacks.text_samples.dirpath={other}", "samples.txt"),
        ("logger.csv.save_dir={other}", "csv/metrics.csv"),
        ("logger.csv.save_dir={other}/csv logger.csv.name=null", "csv/metrics.csv"),
    ],
)
def test_a_new_run_pointed_at_another_runs_records_is_refused_and_replaces_nothing(
    other_run: tuple[Path, Path], tmp_path: Path, data_dir: Path, setting: str, record: str
) -> None:
    other = tmp_path / "other"
    shutil.copytree(other_run[0], other)
    before = tree_digest(other, skip=LOCK)
    out = new_run(tmp_path, data_dir, other_run[1], *setting.format(other=other).split())
    key = setting.split("=")[0]
    assert_one_line_error(
        out,
        f"{key} puts this run's {Path(record).name} at {other / record}, which already holds "
        "another run's",
        "overwrite_run=true to replace it",
    )
    assert tree_digest(other, skip=LOCK) == before


def test_a_users_file_named_as_the_samples_file_is_left_alone(
    other_run: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    out = new_run(
        tmp_path,
        data_dir,
        other_run[1],
        f"callbacks.text_samples.dirpath={tmp_path}",
        "+callbacks.text_samples.filename=notes.txt",
    )
    assert_one_line_error(out, "callbacks.text_samples.dirpath puts this run's notes.txt at")
    assert notes.read_text() == "my notes\n"


def test_overwrite_run_replaces_another_runs_samples_when_asked(
    other_run: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(other_run[0], other)
    out = new_run(
        tmp_path, data_dir, other_run[1], f"callbacks.text_samples.dirpath={other}",
        "overwrite_run=true",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (other / "samples.txt").read_text().startswith("=== step 2 ===")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        (
            "callbacks.model_checkpoint.filename='../../other/checkpoints/best'",
            "callbacks.model_checkpoint.filename='../../other/checkpoints/best' holds a path "
            "(a '/'): pass a file name; its folder is callbacks.model_checkpoint.dirpath",
        ),
        (
            "+callbacks.text_samples.filename=../notes.txt",
            "callbacks.text_samples.filename='../notes.txt' holds a path",
        ),
        (
            "callbacks.model_checkpoint.filename=last",
            "callbacks.model_checkpoint.filename='last' is the name of last.ckpt",
        ),
        (
            "callbacks.rich_progress_bar.refresh_rate=abc",
            "callbacks.rich_progress_bar.refresh_rate='abc' is not a whole number",
        ),
        (
            "callbacks.rich_progress_bar.refresh_rate=-1",
            "callbacks.rich_progress_bar.refresh_rate=-1",
        ),
    ],
)
def test_a_callbacks_file_name_that_is_a_path_or_last_is_refused(
    compose_cfg, override: str, fragment: str
) -> None:
    """(The progress bar's refresh_rate was a TypeError once training started.)"""
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(override, tiny=False))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_default_file_names_with_a_metric_holding_a_slash_pass(compose_cfg) -> None:
    check_train_config(compose_cfg("callbacks.model_checkpoint.filename='b-{val/loss:.2f}'"))
    # Without save_last (Lightning's default, null) no last.ckpt is written: 'last' is free.
    check_train_config(
        compose_cfg(
            "callbacks.model_checkpoint.filename=last", "callbacks.model_checkpoint.save_last=null"
        )
    )


def test_eval_pointed_at_a_training_runs_csv_is_refused_and_adds_no_row(
    other_run: tuple[Path, Path], tmp_path: Path
) -> None:
    # Red team: eval's CSV row (step 0, its own split) landed on the training run's curve.
    other = tmp_path / "other"
    shutil.copytree(other_run[0], other)
    before = tree_digest(other, skip=LOCK)
    out = run_cli(
        "eval",
        f"ckpt_path={other / 'checkpoints' / 'last.ckpt'}",
        "logger=csv",
        f"logger.csv.save_dir={other}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert_one_line_error(
        out,
        f"logger.csv.save_dir puts this run's metrics.csv at {other / 'csv' / 'metrics.csv'}, "
        "which already holds another run's",
        "pass an empty folder",
    )
    assert "overwrite_run" not in out.stderr  # eval has no such switch
    assert tree_digest(other, skip=LOCK) == before
