"""docs24: `trainer.log_every_n_steps=0` still gave every logger a training row (the throughput
callback's, at the last step), and a refusal that came after the loggers were built left its
run folder behind: `csv/hparams.yaml`, or a failed offline W&B run that `wandb sync` would
upload (lmtrain.callbacks.throughput, lmtrain.utils.refused_run).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli, wandb_records
from tests.helpers.corpora import one_file_corpus

# 300 characters: a val split of 30 tokens, fewer than data.block_size + 1 = 33 (TINY).
SHORT_SPLIT = "the val split has"


def short_corpus(tmp_path: Path) -> Path:
    corpus = one_file_corpus(tmp_path / "corpus")
    short = tmp_path / "short.txt"
    short.write_text(corpus.read_text()[:300])
    return short


def tensorboard_tags(folder: Path) -> set[str]:
    tags: set[str] = set()
    for events in folder.glob("events.out.tfevents.*"):
        for event in EventFileLoader(str(events)).Load():
            tags |= {value.tag for value in event.summary.value}
    return tags


def test_log_every_n_steps_0_gives_no_logger_a_training_row(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    overrides = ("logger=many", f"hydra.run.dir={run}", "trainer.log_every_n_steps=0")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    with (run / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert rows and not [k for row in rows for k, v in row.items() if k.startswith("train/") and v]
    assert not {t for t in tensorboard_tags(run / "tensorboard") if t.startswith("train/")}
    history = [r["history"]["item"] for r in wandb_records(run) if r["type"] == "history"]
    assert history  # the validations' rows
    assert not [k for item in history for k in item if k.startswith("train/")], history
    # A run that logged steps: its loggers' folders are no refused run's leftovers.
    from lmtrain.utils.refused_run import logger_leftover

    for name in ("csv", "tensorboard", "wandb"):
        assert not logger_leftover(run / name), name


@pytest.mark.parametrize("logger", ["csv", "wandb", "many"])
def test_a_refusal_after_the_loggers_leaves_no_run_folder(
    tmp_path: Path, data_dir: Path, logger: str
) -> None:
    corpus = short_corpus(tmp_path)
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, f"logger={logger}", corpus=corpus))
    assert_one_line_error(result, SHORT_SPLIT)
    # paths.log_dir=<tmp>/logs did not exist: no logs/train/runs/<time>/ and nothing above it,
    # no offline W&B run to sync (W&B finished before its folder went: no traceback above).
    assert not (tmp_path / "logs").exists(), sorted(map(str, (tmp_path / "logs").rglob("*")))


def test_a_refusal_in_an_existing_folder_keeps_the_loggers_files(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "existing"
    run.mkdir()
    corpus = short_corpus(tmp_path)
    overrides = ("logger=many", f"hydra.run.dir={run}")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    assert_one_line_error(result, SHORT_SPLIT)
    assert (run / ".hydra" / "config.yaml").is_file()
    assert (run / "csv" / "hparams.yaml").is_file()
    assert list((run / "wandb").glob("offline-run-*"))


def test_a_file_of_anyone_elses_in_the_wandb_run_keeps_the_folder(tmp_path: Path) -> None:
    """Only history rows were looked for: a file a user's code dropped into the offline run's
    `files/` went with the refused folder (rev_diff24b). A real finished offline run, W&B's
    own files only, may go; with another file it stays."""
    import wandb

    from lmtrain.utils.refused_run import only_wandb_files

    run = wandb.init(
        mode="offline", dir=tmp_path, project="p", settings=wandb.Settings(silent=True)
    )
    run_id = run.id
    run.finish()
    (session,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    assert only_wandb_files(session, run_id)
    (session / "files" / "notes.txt").write_text("mine")
    assert not only_wandb_files(session, run_id)
