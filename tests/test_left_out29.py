"""Warnings that said too little or too much: `model.optimizer=null` trained with torch's AdamW
defaults and said nothing (the module's fallback for Python callers, which no shipped config
names); an optimizer config of the user's own was told that adamw's keys stayed."""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from torch.optim.lr_scheduler import ReduceLROnPlateau
from transformers import GPT2Config, GPT2LMHeadModel

from lmtrain.errors import LMTrainError
from lmtrain.models.optimizers import configure_optimizers
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


def test_an_optimizer_config_of_ones_own_is_not_told_to_drop_its_keys(
    compose_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    # rev_ext29: SGD with momentum and weight_decay=0 of the user's own config was told that
    # adamw's keys stayed and to drop them (momentum is no key of adamw's).
    own = [
        "model.optimizer._target_=torch.optim.SGD",
        "~model.optimizer.betas",
        "~model.optimizer.eps",
        "~model.optimizer.fused",
        "+model.optimizer.momentum=0.9",
        "model.optimizer.weight_decay=0.0",
    ]
    with caplog.at_level(logging.WARNING):
        check_train_config(compose_cfg(*own))
    assert "keys stay when only _target_ changes" not in caplog.text
    # One adamw key kept at adamw's value is still named, and only it.
    with caplog.at_level(logging.WARNING):
        check_train_config(compose_cfg(*own[:-1]))
    assert "torch.optim.SGD is given weight_decay=0.1 (model/optimizer=adamw's keys" in caplog.text


def test_another_familys_keys_merged_in_name_the_model_config_to_select(compose_cfg) -> None:
    # rev_ext29: an experiment that set model.model_type=llama over the default gpt2_tiny was
    # told to "fix the name" of GPT-2's keys, which it never typed (did you mean ...?).
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg("model.model_type=llama"))
    line = str(err.value)
    assert "model.config.n_layer" in line and "are GPT2Config's, not a setting of" in line, line
    assert "(model=llama_tiny, or `override /model: llama_tiny` in an experiment's" in line, line
    # A key of another family typed on the family's own config (review): named so, and the
    # advice does not claim a model_type was switched.
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg("+model.config.intermediate_size=64"))
    assert str(err.value).startswith(
        "model.config.intermediate_size is LlamaConfig's, not a setting of transformers' "
        "GPT2Config (model.model_type=gpt2): drop it (~model.config.<key>); where"
    ), str(err.value)
    assert "did you mean" not in line, line
    # A misspelt key of the model's own family is still asked to be fixed.
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg("+model.config.n_layr=2"))
    assert "model.config.n_layr (did you mean n_layer?) is not a setting" in str(err.value)


def test_a_schedule_on_a_monitored_metric_is_named_as_model_scheduler() -> None:
    # rev_ext29: a factory returning ReduceLROnPlateau was Lightning's "must include a monitor"
    # refusal, which told the user to check the trainer.* and callbacks.* settings.
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32))

    def plateau(optimizer: torch.optim.Optimizer, num_training_steps: int) -> ReduceLROnPlateau:
        return ReduceLROnPlateau(optimizer)

    with pytest.raises(LMTrainError) as err:
        configure_optimizers(model, set(), functools.partial(torch.optim.AdamW), plateau, 10)
    assert str(err.value).startswith(
        "model.scheduler builds a ReduceLROnPlateau, which steps on a monitored metric"
    )
