"""A model that is NaN before it trains, and the settings that make it so, each named in one line.

Red team (2026-12-05): a negative layer_norm_epsilon gave NaN logits at the first forward, which
the causality probe read as "attends to later tokens" and sent to is_decoder=true; 16-true with
AdamW's eps=1e-8 (0 in float16) went NaN within steps and the guard advised a lower learning
rate; a NaN loss at step 1 was sent to resume from step 0, to meet it again; a negative RoPE
scaling factor trained with one transformers log line. Config checks are run on composed
configs, the rest as `python -m lmtrain.train` (or from Python, where no config check runs first).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.hf import build_causal_lm
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_LLAMA, TINY_RUN
from tests.helpers.corpora import DOCS
from tests.helpers.pretrained import save_tiny_pretrained

LLAMA = [*TINY_LLAMA, *TINY_RUN]  # in place of TINY (compose_cfg(..., tiny=False))
FP16_EPS = (
    "trainer.precision=16-true keeps the optimizer's state in float16, where "
    "model.optimizer.eps=1e-08 is 0 (NaN within steps): pass trainer.precision=bf16-true, "
    "bf16-mixed or 32-true, or model.optimizer.eps=1e-4"
)
QUIET = ("logger=none", "callbacks.text_samples=null")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["+model.config.layer_norm_epsilon=-1.0"],
            "model.config.layer_norm_epsilon=-1.0 must be in [0, inf): pass a number in "
            "[0, inf), such as 1e-05",
        ),
        (
            [*LLAMA, "+model.config.rms_norm_eps=-1.0"],
            "model.config.rms_norm_eps=-1.0 must be in [0, inf): pass a number in [0, inf), "
            "such as 1e-05",
        ),
        (
            [*LLAMA, "model.config.rope_theta=-5.0"],
            "model.config.rope_theta=-5.0 must be positive: pass a positive number, such as "
            "10000.0",
        ),
        (
            [*LLAMA, "model.config.rope_theta=0.0"],
            "model.config.rope_theta=0.0 must be positive",
        ),
        (
            ["+model.config.initializer_range=-0.02"],
            "model.config.initializer_range=-0.02 must be in [0, inf): pass a number in "
            "[0, inf), such as 0.02",
        ),
        (
            [*LLAMA, "+model.config.rope_scaling={rope_type:linear,factor:-2.0}"],
            "model.config.rope_scaling.factor=-2.0 must be in [1, inf): pass a number in "
            "[1, inf) (how many times the context is stretched: 2.0 doubles it)",
        ),
        (
            [*LLAMA, "+model.config.rope_parameters={rope_type:default,rope_theta:-1.0}"],
            "model.config.rope_parameters.rope_theta=-1.0 must be positive",
        ),
        (["trainer.precision=16-true"], FP16_EPS),
        # On a GPU too: the state is float16 whatever runs it.
        (["trainer.precision=16-true", "trainer.accelerator=gpu"], FP16_EPS),
        (
            ["trainer.precision=16-true", "model/optimizer=muon"],
            FP16_EPS.replace("model.optimizer.", "model.optimizer.adamw.optimizer."),
        ),
    ],
)
def test_settings_that_make_the_model_nan_are_refused_up_front(
    compose_cfg, overrides: list[str], message: str
) -> None:
    tiny = not any(o.startswith("model=") for o in overrides)
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(*overrides, tiny=tiny))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [*LLAMA, "+model.config.rms_norm_eps=0.0"],  # trains: 0 is no epsilon, not a NaN
        ["+model.config.layer_norm_epsilon=1e-5", "+model.config.initializer_range=0.0"],
        [*LLAMA, "+model.config.rope_scaling={rope_type:linear,factor:2.0}"],
        ["trainer.precision=16-true", "model.optimizer.eps=1e-4"],
        # float16's subnormal eps values are not 0: 1e-7 trained 120 steps of gpt2_tiny.
        ["trainer.precision=16-true", "model.optimizer.eps=1e-7"],
        # No eps at all: nothing rounds to 0.
        [
            "trainer.precision=16-true",
            "model.optimizer._target_=torch.optim.SGD",
            "~model.optimizer.betas",
            "~model.optimizer.eps",
        ],
        # fp16 mixed precision keeps float32 state (refused on the CPU for another reason).
        ["trainer.precision=16-mixed", "trainer.accelerator=gpu"],
        ["trainer.precision=bf16-true"],
    ],
)
def test_sound_values_beside_them_pass(compose_cfg, overrides: list[str]) -> None:
    tiny = not any(o.startswith("model=") for o in overrides)
    check_train_config(compose_cfg(*overrides, tiny=tiny))


def test_a_refused_setting_prepares_no_data(tmp_path: Path) -> None:
    """The command, refused in one line before the token cache is built."""
    data = tmp_path / "data"
    cli = tiny_cli(tmp_path, data, *QUIET, "+model.config.layer_norm_epsilon=-1.0")
    out = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(out, "model.config.layer_norm_epsilon=-1.0 must be in [0, inf)")
    assert not (data / "cache").exists() or not any((data / "cache").iterdir())
    out = run_cli("train", *tiny_cli(tmp_path, data, *QUIET, "trainer.precision=16-true"))
    assert_one_line_error(out, FP16_EPS)
    assert not (data / "cache").exists() or not any((data / "cache").iterdir())


def test_nan_logits_at_the_first_forward_are_not_called_an_encoders(
    tmp_path: Path, data_dir: Path
) -> None:
    """Weights drawn with a standard deviation of 1e30 overflow the first forward: NaN logits,
    which never compare equal, read as a later token changing earlier predictions."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, "+model.config.initializer_range=1e30")
    line = assert_one_line_error(
        run_cli("train", *cli, f"hydra.run.dir={run}"),
        "the model built from model.model_type='gpt2' and model.config gives non-finite logits "
        "(nan) before any training: check model.config values such as layer_norm_epsilon, "
        "rms_norm_eps, rope_theta or initializer_range",
    )
    assert "attends to later tokens" not in line and "is_decoder" not in line
    assert not (run / "checkpoints").exists()


def test_a_llama_with_a_negative_epsilon_is_named_from_python_too() -> None:
    """CausalLMModule runs the model checks; build_causal_lm, below them, has only its probe,
    which read the NaN as attending to later tokens. (Llama's initializer_range is bounded by
    transformers, so the CLI cannot reach the probe with a NaN Llama.)"""
    config = {
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "rms_norm_eps": -1.0,
    }
    with pytest.raises(LMTrainError, match=r"^model.config.rms_norm_eps=-1.0 must be in \[0"):
        CausalLMModule(model_type="llama", config=config)
    with pytest.raises(LMTrainError) as err:
        build_causal_lm("llama", config, None, vocab_size=97)
    assert str(err.value).startswith(
        "the model built from model.model_type='llama' and model.config gives non-finite "
        "logits (nan) before any training"
    )


def test_a_nan_loss_at_step_1_names_the_model_and_precision_not_resuming(
    tmp_path: Path, data_dir: Path
) -> None:
    """Weights of standard deviation 1000 (AdamW's eps 1e-4, which float16 holds) overflow
    float16 activations at the first step; in float32 they train. The stop advised a lower
    learning rate and resuming from step 0's weights: both meet the same NaN."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, "+model.config.initializer_range=1000.0")
    half = ["trainer.precision=16-true", "model.optimizer.eps=1e-4"]
    out = run_cli("train", *cli, *half, f"hydra.run.dir={run}")
    line = assert_one_line_error(
        out,
        "at step 1, before any update: the model as built gives it (model.config, "
        "model.pretrained's weights or trainer.precision=16-true), and no resume can help "
        "(nothing was saved)",
        "or initializer_range, or pass trainer.precision=32-true, then start a new run (in this "
        "run folder: overwrite_run=true)",
    )
    assert "resume with" not in line and "ckpt_path" not in line and ".lr" not in line
    assert not (run / "checkpoints" / "last.ckpt").exists()  # step 0's weights, no use
    # The advice holds: the same model in float32 trains, in the same folder.
    again = run_cli(
        "train", *cli, "trainer.precision=32-true", f"hydra.run.dir={run}", "overwrite_run=true"
    )
    assert again.returncode == 0, again.stderr[-3000:]


def test_weights_nan_before_step_1_are_not_called_an_overflowed_update(
    tmp_path: Path, data_dir: Path
) -> None:
    """Weights NaN before any update (as a damaged model.pretrained loads): the stop blamed an
    update that overflowed. In float32 the precision is not named."""
    run = tmp_path / "run"
    nan_weights = [
        "+callbacks.nan._target_=tests.helpers.faults.InjectNonFinite",
        "+callbacks.nan.step=1",
        "+callbacks.nan.weights=true",
    ]
    out = run_cli(
        "train", *tiny_cli(tmp_path, data_dir, *QUIET), *nan_weights, f"hydra.run.dir={run}"
    )
    line = assert_one_line_error(
        out,
        "non-finite loss (nan) at step 1, before any update: the model as built gives it "
        "(model.config or model.pretrained's weights), and no resume can help (its weights "
        "as built are NaN or inf)",
    )
    assert "overflowed" not in line and "resume with" not in line and "precision" not in line
    assert not (run / "checkpoints" / "last.ckpt").exists()


def test_pretrained_weights_that_hold_nan_are_named_not_the_config(tmp_path: Path) -> None:
    """Damaged pretrained weights were blamed on model.config (review): initializer_range means
    nothing for loaded weights."""
    folder = save_tiny_pretrained(tmp_path / "base", DOCS)
    model = AutoModelForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    model.save_pretrained(folder)
    with pytest.raises(LMTrainError) as err:
        build_causal_lm(None, None, str(folder), vocab_size=None)
    assert str(err.value) == (
        f"model.pretrained={str(folder)!r} gives non-finite logits (nan) before any training, "
        "from its weights (transformer.h.0.mlp.c_fc.weight holds nan or inf): copy or download "
        "the weights again"
    )
