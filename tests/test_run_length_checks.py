"""Settings checked against the length of an epoch, which is known once the data are: a
validation interval that an epoch never reaches was Lightning's ValueError traceback after the
data were prepared, with the logger's files already written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.validation_interval import (
    check_val_interval_fits_epoch,
    epoch_batches,
    lightning_interval_refusal,
)
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

EPOCH_CHECK = ["trainer.check_val_every_n_epoch=1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("corpus"))


def tiny_parts(compose_cfg, corpus: Path) -> tuple[Any, Any]:
    """The prepared data module and the model of a tiny run on `corpus`, as train() builds them."""
    cfg = compose_cfg("data=text_files", "data.tokenizer.kind=char", f"data.source.path={corpus}")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    model = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    return datamodule, model


def trainer(tmp_path: Path, **settings: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **settings,
    )


@pytest.mark.parametrize("limit", [1.0, 3, 0.5])
def test_the_epoch_is_as_long_as_lightning_counts_it(
    compose_cfg, corpus: Path, tmp_path: Path, limit: float
) -> None:
    """epoch_batches agrees with Lightning's own count (its refusal names it), whole or limited
    by trainer.limit_train_batches; Lightning's refusal itself is one line."""
    datamodule, model = tiny_parts(compose_cfg, corpus)
    settings = {"check_val_every_n_epoch": 1, "limit_train_batches": limit}
    too_long = trainer(tmp_path, val_check_interval=10**6, **settings)
    with pytest.raises(ValueError) as refused:
        too_long.fit(model, datamodule=datamodule)
    counted = re.search(r"training batches \((\d+)\)", str(refused.value))
    assert counted is not None, refused.value
    batches = epoch_batches(trainer(tmp_path, **settings), datamodule)
    assert batches == int(counted[1])
    line = str(lightning_interval_refusal(refused.value))
    assert line == (
        f"trainer.val_check_interval=1000000 batches is longer than an epoch ({batches} batches) "
        f"with trainer.check_val_every_n_epoch set: pass at most {batches}, or "
        "trainer.check_val_every_n_epoch=null"
    )


def test_an_interval_up_to_an_epoch_passes_and_one_more_is_refused(
    compose_cfg, corpus: Path, tmp_path: Path
) -> None:
    datamodule, _ = tiny_parts(compose_cfg, corpus)
    batches = epoch_batches(trainer(tmp_path), datamodule)
    assert batches is not None and batches > 2
    check_val_interval_fits_epoch(
        trainer(tmp_path, val_check_interval=batches, check_val_every_n_epoch=1), datamodule
    )
    with pytest.raises(LMTrainError) as err:
        check_val_interval_fits_epoch(
            trainer(tmp_path, val_check_interval=batches + 1, check_val_every_n_epoch=2),
            datamodule,
        )
    assert str(err.value) == (
        f"trainer.val_check_interval={batches + 1} batches is longer than an epoch ({batches} "
        f"batches) with trainer.check_val_every_n_epoch=2: pass at most {batches}, or "
        "trainer.check_val_every_n_epoch=null"
    )
    with pytest.raises(LMTrainError, match=r"\(2 batches, trainer.limit_train_batches=2\)"):
        check_val_interval_fits_epoch(
            trainer(
                tmp_path, val_check_interval=3, check_val_every_n_epoch=1, limit_train_batches=2
            ),
            datamodule,
        )


@pytest.mark.parametrize(
    "settings",
    [
        # Counted across epochs (lmtrain's default; Lightning's is 1).
        {"val_check_interval": 10**6, "check_val_every_n_epoch": None},
        {"val_check_interval": 10**6, "check_val_every_n_epoch": 1, "limit_val_batches": 0},
        {"val_check_interval": 0.5, "check_val_every_n_epoch": 1},  # a share of the epoch
        {"val_check_interval": "00:00:30:00", "check_val_every_n_epoch": 1},  # a time span
        {"val_check_interval": 10**6, "check_val_every_n_epoch": 1, "fast_dev_run": True},
    ],
)
def test_what_lightning_takes_passes(
    compose_cfg, corpus: Path, tmp_path: Path, settings: dict[str, Any]
) -> None:
    datamodule, _ = tiny_parts(compose_cfg, corpus)
    check_val_interval_fits_epoch(trainer(tmp_path, **settings), datamodule)


def test_an_interval_longer_than_an_epoch_is_one_line_before_the_loggers_write(
    tmp_path: Path, data_dir: Path
) -> None:
    """The red team's command: one line, and no csv/hparams.yaml left behind."""
    run = tmp_path / "run"
    overrides = [*EPOCH_CHECK, "trainer.val_check_interval=400", "logger=csv"]
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, f"hydra.run.dir={run}"))
    line = assert_one_line_error(result, "trainer.val_check_interval=400 batches is longer")
    batches = re.search(r"than an epoch \((\d+) batches\)", line)
    assert batches is not None, line
    assert line == (
        f"error: trainer.val_check_interval=400 batches is longer than an epoch ({batches[1]} "
        f"batches) with trainer.check_val_every_n_epoch=1: pass at most {batches[1]}, or "
        "trainer.check_val_every_n_epoch=null"
    )
    assert not (run / "csv").exists(), "the loggers wrote nothing"
    assert not (run / "checkpoints").exists()
