"""`lmtrain.report` in parts. The report of a real sweep (an Optuna study with a failed and a
diverged trial, curves from W&B) is tested in test_sweeps.py, on the study that file runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger

from lmtrain import report
from lmtrain.report import Job, ranked, read_curve


def job(num: int, **metrics: float) -> Job:
    return Job(num, Path(str(num)), {}, metrics, optimized_metric="val/loss")


def test_ranking_puts_the_best_first_then_diverged_then_failed() -> None:
    jobs = [
        job(0),
        job(1, **{"val/loss": 2.0}),
        job(2, **{"val/loss": math.nan}),
        job(3, **{"val/loss": 1.5}),
    ]
    assert [j.num for j in ranked(jobs)] == [3, 1, 2, 0]
    assert [j.status for j in ranked(jobs)] == ["ok", "ok", "diverged", "failed"]
    assert [j.num for j in ranked(jobs, maximize=True)] == [1, 3, 2, 0]


def test_curve_is_read_from_a_csv_logger_when_there_is_no_wandb_run(tmp_path: Path) -> None:
    logger = CSVLogger(save_dir=tmp_path, name="csv", version="")  # logger=csv writes this
    logger.log_metrics({"val/loss": 3.0}, step=9)
    logger.log_metrics({"train/loss": 2.9}, step=10)
    logger.log_metrics({"val/loss": 2.5}, step=19)
    logger.save()
    assert read_curve(tmp_path) == [(9.0, 3.0), (19.0, 2.5)]


def test_report_refuses_a_folder_that_is_not_a_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        report.main([str(tmp_path)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {str(tmp_path)!r} holds no multirun jobs (no */.hydra/overrides.yaml): pass a "
        "sweep folder, e.g. logs/train/multiruns/<time>"
    ]
