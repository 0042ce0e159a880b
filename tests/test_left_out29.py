"""Items earlier stops left out: `model.optimizer=null` trained with torch's AdamW defaults and
said nothing (the module's fallback for Python callers, which no shipped config names)."""

from __future__ import annotations

import logging

import pytest

from lmtrain.utils.config_checks import check_train_config


def test_a_null_optimizer_is_named_with_the_defaults_it_trains_with(
    compose_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        check_train_config(compose_cfg("model.optimizer=null"))
    lines = [r.getMessage() for r in caplog.records if "model.optimizer is null" in r.getMessage()]
    assert lines == [
        "model.optimizer is null: training with torch.optim.AdamW's own defaults (lr=0.001, "
        "weight_decay=0.01 on the decayed weights); pick one with model/optimizer=adamw or muon"
    ]


def test_a_named_optimizer_gets_no_such_warning(
    compose_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        check_train_config(compose_cfg("model/optimizer=muon"))
        check_train_config(compose_cfg())
    assert not [r for r in caplog.records if "model.optimizer is null" in r.getMessage()]
