"""The warning of a warm-up not shorter than the run names the peak the run reaches.

transformers' warm-up gives step s (from 0) the rate s / num_warmup_steps, so a run of n steps
peaks at (n - 1) / num_warmup_steps, and a one-step run trains at rate 0: the warning said
n / num_warmup_steps ("about 1%" for a run that trained nothing; red team rev_num24)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from lmtrain.utils.config_checks import check_train_config
from tests.helpers.cli import train_csv_run
from tests.helpers.corpora import one_file_corpus


def test_the_warned_peak_is_the_highest_rate_the_run_logs(tmp_path: Path, data_dir: Path) -> None:
    run = train_csv_run(
        tmp_path,
        data_dir,
        one_file_corpus(tmp_path / "corpus"),
        "run",
        "trainer.max_steps=5",
        "trainer.log_every_n_steps=1",
        "model.scheduler.num_warmup_steps=8",
        "model.optimizer.lr=0.001",
    )
    log = (run / "train.log").read_text()
    assert "the learning rate peaks at about 50% of model.optimizer.lr" in log
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        rates = [float(row["train/lr/decay"]) for row in csv.DictReader(f) if row["train/lr/decay"]]
    assert max(rates) == 0.001 * 4 / 8


def test_a_one_step_run_under_a_warm_up_is_told_it_trains_nothing(compose_cfg, caplog) -> None:
    config = compose_cfg("trainer.max_steps=1", "model.scheduler.num_warmup_steps=100")
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.trainer_checks"):
        check_train_config(config)
    assert (
        "model.scheduler.num_warmup_steps=100 is not shorter than trainer.max_steps=1: the "
        "learning rate is 0 at the warm-up's first step, the run's only one: it trains "
        "nothing; lower the warm-up"
    ) in caplog.text
