"""Lightning's own callbacks added to a run, as a Lightning user adds them:
`+callbacks.<name>._target_=lightning.pytorch.callbacks.<Class>`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmtrain.utils.checks import Problems
from lmtrain.utils.target_checks import check_targets
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, train_tiny

SWA = [
    "+callbacks.swa._target_=lightning.pytorch.callbacks.StochasticWeightAveraging",
    "+callbacks.swa.swa_lrs=1e-3",
    "+callbacks.swa.swa_epoch_start=1",
    "trainer.max_steps=-1",
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=4",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
]


def test_swa_average_is_what_last_ckpt_holds_and_the_run_reported(
    tmp_path: Path, data_dir: Path
) -> None:
    # SWA puts its average into the model at the end of training, after the last validation
    # had saved last.ckpt: the run's final validation saw the average, last.ckpt the last step.
    run_dir = tmp_path / "run"
    last = train_tiny(run_dir, data_dir, one_file_corpus(tmp_path / "corpus"), *SWA)
    reported = json.loads((run_dir / "metrics.json").read_text())["val/loss"]
    evaluated = eval_tiny(last, tmp_path / "eval", data_dir)["val/loss"]
    assert evaluated == pytest.approx(reported, rel=1e-6)


def test_a_callback_lightning_refuses_once_training_starts_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    # Before: Lightning's MisconfigurationException as a traceback, after the data and the
    # model were built.
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=none", f"hydra.run.dir={tmp_path / 'run'}"),
        *SWA[:2],  # swa_epoch_start 0.8 (a share of max_epochs), and max_epochs=-1
    )
    assert_one_line_error(
        out, "Lightning refused the run's settings: SWA with `swa_epoch_start` as a float"
    )


def test_the_learning_rate_finder_is_pointed_at_a_sweep() -> None:
    # Before: AttributeError inside fit (the finder looks for a module attribute `lr`).
    problems = Problems()
    finder = {"_target_": "lightning.pytorch.callbacks.LearningRateFinder"}
    check_targets({"callbacks": {"lrf": finder, "text_samples": None}}, problems)
    (line,) = problems.found
    assert "callbacks.lrf._target_=lightning.pytorch.callbacks.LearningRateFinder" in line
    assert "hparams_search=optuna" in line and "~callbacks.lrf" in line
