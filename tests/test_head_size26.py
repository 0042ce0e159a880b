"""A fresh RoPE model (Llama-style) whose heads have an odd size is refused in one line naming
the settings, before data preparation: size 3 was a tensor-shape error from the model build that
left a run folder, size 1 trained with RoPE broadcast instead of rotated, and sizes 5 to 11 were
transformers' validator line, which names no lmtrain setting. GPT-2 (no RoPE) keeps any size."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_LLAMA, TINY_RUN

RAISED = "the rotary position embeddings (RoPE) of model.model_type=llama need"


def llama(*overrides: str) -> list[str]:
    """A tiny Llama run's overrides, then `overrides` (which win)."""
    return [*TINY_LLAMA, *TINY_RUN, *overrides]


def heads(width: int, query: int, key_value: int) -> tuple[str, ...]:
    """The overrides of a Llama `width` wide with `query` heads over `key_value` groups."""
    return (
        f"model.config.hidden_size={width}",
        f"model.config.num_attention_heads={query}",
        f"model.config.num_key_value_heads={key_value}",
    )


@pytest.mark.parametrize(
    ("sizes", "line"),
    [
        (
            heads(96, 32, 8),
            "model.config.hidden_size=96 / model.config.num_attention_heads=32 gives heads of 3 "
            f"dimensions, and {RAISED} an even number: pass a hidden_size that is a multiple of "
            "64 (such as 128), or a num_attention_heads that splits it into heads of an even size",
        ),
        (  # head size 1 trained, without a word
            heads(32, 32, 8),
            "model.config.hidden_size=32 / model.config.num_attention_heads=32 gives heads of 1 "
            f"dimensions, and {RAISED} an even number: pass a hidden_size that is a multiple of "
            "64 (such as 64)",
        ),
        (  # transformers' own refusal named no setting
            heads(20, 4, 2),
            "model.config.hidden_size=20 / model.config.num_attention_heads=4 gives heads of 5 "
            f"dimensions, and {RAISED} an even number: pass a hidden_size that is a multiple of "
            "8 (such as 24)",
        ),
        (
            ("+model.config.head_dim=3",),
            f"model.config.head_dim=3 is odd, and {RAISED} an even head size: pass an even "
            "head_dim, such as 4",
        ),
    ],
)
def test_an_odd_rope_head_is_refused(compose_cfg, sizes: tuple[str, ...], line: str) -> None:
    cfg = compose_cfg(*llama(*sizes), tiny=False)
    with pytest.raises(LMTrainError) as err:
        check_train_config(cfg)
    assert line in str(err.value)
    assert str(err.value).count("model.config.") == line.count("model.config."), err.value


def test_other_rope_models_are_checked_too(compose_cfg) -> None:
    cfg = compose_cfg(*llama("model.model_type=qwen2", "model.config.hidden_size=12"), tiny=False)
    with pytest.raises(LMTrainError, match="heads of 3 dimensions, and the rotary position "):
        check_train_config(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        llama("model.config.hidden_size=8"),  # heads of 2 (transformers' tiny test models)
        llama("+model.config.head_dim=8"),
        # Qwen3's class fixes heads of 128 whatever the width: 12 / 4 is not its head size.
        llama("model.model_type=qwen3", "model.config.hidden_size=12"),
        # GPT-2 learns its positions: no RoPE, so heads of 3 are its own business.
        ["model.config.n_layer=2", "model.config.n_head=2", "model.config.n_embd=6", *TINY_RUN],
    ],
)
def test_even_heads_and_models_without_rope_pass(compose_cfg, overrides: list[str]) -> None:
    check_train_config(compose_cfg(*overrides, tiny=False))


def test_an_odd_head_is_refused_before_data_preparation(tmp_path: Path) -> None:
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    command = tiny_cli(tmp_path, data_dir, *llama(*heads(96, 32, 8)))
    # TINY_LLAMA in place of tiny_cli's GPT-2 sizes
    out = run_cli("train", *(o for o in command if not o.startswith("model.config.n_")))
    assert_one_line_error(out, "model.config.hidden_size=96 / model.config.num_attention_heads")
    assert out.returncode == 1, out.stderr[-2000:]
    assert not data_dir.exists() or not any(data_dir.iterdir())  # no token cache built
    assert not logs.exists() or not any(logs.rglob(".hydra")), sorted(logs.rglob("*"))
