"""A schedule's null where it needs a value, and a part's scheduler that is not a schedule, are
refused in one line before any work.

Red team rev_opt18: `model.scheduler.num_warmup_steps=null` and `model.scheduler.min_lr_rate=null`
passed the config checks, then the run prepared its data and failed inside trainer.fit with
transformers' tracebacks ("'<' not supported between instances of 'int' and 'NoneType'", "One
of min_lr or min_lr_rate should be set"). And `model.optimizer.muon.scheduler=5` was said to
change "keys of model.scheduler, which is null" while model.scheduler was the cosine schedule.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.models.optimizers import OptimizerParts
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

COSINE = "get_cosine_with_min_lr_schedule_with_warmup"
MUON = ["model/optimizer=muon"]


def custom_schedule(optimizer, num_training_steps: int, num_warmup_steps: int | None = None):
    """A schedule of the user's own whose warm-up takes null (none)."""
    from transformers import get_constant_schedule

    return get_constant_schedule(optimizer)


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["model.scheduler.num_warmup_steps=null"],
            [f"model.scheduler.num_warmup_steps=null: {COSINE} needs a value there: pass a whole"],
        ),
        (
            ["model.scheduler.min_lr_rate=null"],
            [
                "model.scheduler has min_lr_rate=null, min_lr=null: ",
                f"{COSINE} takes exactly one of them",
                "pass model.scheduler.min_lr_rate=0.1",
            ],
        ),
        (
            ["~model.scheduler.min_lr_rate"],
            ["model.scheduler has min_lr_rate=null, min_lr=null"],
        ),
        (
            ["+model.scheduler.min_lr=1e-5"],
            ["min_lr_rate=0.1, min_lr=1e-05", "drop one (~model.scheduler.min_lr)"],
        ),
        # The Muon parts' own schedule keys go through the same check.
        (
            [*MUON, "model.optimizer.muon.scheduler={num_warmup_steps:null}"],
            ["model.optimizer.muon.scheduler.num_warmup_steps=null: get_cosine_with_min_lr"],
        ),
        (
            [*MUON, "model.optimizer.adamw.scheduler={min_lr_rate:null}"],
            ["model.optimizer.adamw.scheduler has min_lr_rate=null, min_lr=null"],
        ),
        # The part's floor over model.scheduler's other one: `~` cannot drop a key the part
        # does not hold (rev_diff19); null over it does.
        (
            [
                *MUON,
                "~model.scheduler.min_lr_rate",
                "+model.scheduler.min_lr=1e-5",
                "+model.optimizer.muon.scheduler={min_lr_rate:0.2}",
            ],
            ["drop one (+model.optimizer.muon.scheduler.min_lr=null)"],
        ),
        (
            [*MUON, "model.optimizer.muon.scheduler=5"],
            ["model.optimizer.muon.scheduler=5 is not a schedule: pass null (model.scheduler)"],
        ),
        (
            [*MUON, "model.scheduler=null", "model.optimizer.muon.scheduler={num_warmup_steps:0}"],
            ["model.optimizer.muon.scheduler changes keys of model.scheduler, which is null"],
        ),
    ],
)
def test_a_schedule_setting_it_cannot_take_is_one_line_before_the_data(
    tmp_path: Path, overrides: list[str], fragments: list[str]
) -> None:
    data_dir = tmp_path / "data"
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, "logger=csv"))
    line = assert_one_line_error(result, *fragments)
    assert "which is null" not in line or "model.scheduler=null" in overrides
    assert not data_dir.exists() or not any(data_dir.iterdir())  # nothing was prepared


def test_null_passes_where_the_schedule_takes_it(compose_cfg) -> None:
    """min_lr in min_lr_rate's place, and a schedule whose warm-up takes None."""
    check_train_config(compose_cfg("model.scheduler.min_lr_rate=null", "+model.scheduler.min_lr=0"))
    custom = f"model.scheduler._target_={__name__}.custom_schedule"
    check_train_config(
        compose_cfg(custom, "~model.scheduler.min_lr_rate", "model.scheduler.num_warmup_steps=null")
    )
    check_train_config(compose_cfg(*MUON, "model.optimizer.adamw.scheduler={num_warmup_steps:0}"))


def test_a_run_with_min_lr_in_place_of_min_lr_rate_trains(tmp_path: Path, data_dir: Path) -> None:
    overrides = ["model.scheduler.min_lr_rate=null", "+model.scheduler.min_lr=1e-5", "logger=csv"]
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, "trainer.max_steps=2"))
    assert result.returncode == 0, result.stderr[-3000:]


def test_optimizer_parts_refuse_a_scheduler_that_is_not_a_schedule_when_built() -> None:
    """From Python too, before the data: not at configure_optimizers, and in true words."""
    adamw = {"params": "rest", "optimizer": lambda groups: None}
    message = "model.optimizer.adamw.scheduler=5 is not a schedule: pass null (model.scheduler)"
    with pytest.raises(LMTrainError, match=re.escape(message)):
        OptimizerParts(adamw={**adamw, "scheduler": 5})
