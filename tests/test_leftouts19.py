"""Three refusals that came late or as a library's words (fixLO19).

- `LOCAL_RANK=abc python -m lmtrain.strategies consolidate ...` was torchmetrics' ValueError
  traceback: the package's `__init__` imported Lightning before its `__main__` could check the
  rank variables (lmtrain.utils.import_env), as the other entry points do.
- `model.attn_implementation=flex_attention` on GPT-2 was refused once the model was built, after
  the corpus was tokenized; the model class's flag says so before any work
  (lmtrain.utils.model_checks.check_attention).
- `model.pretrained=123` (a folder named by a number, unquoted) ended in "TypeError: expected str,
  bytes or os.PathLike object, not int"; now one line naming `./123`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import transformers
from omegaconf import DictConfig
from transformers import GPT2Config

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

VERSION = transformers.__version__


# -- 1: python -m lmtrain.strategies and the rank variables ------------------------------------
@pytest.mark.parametrize(("name", "value"), [("LOCAL_RANK", "abc"), ("RANK", "x1")])
def test_the_strategies_command_refuses_a_rank_that_is_no_number_in_one_line(
    tmp_path: Path, name: str, value: str
) -> None:
    folder = tmp_path / "last.ckpt"
    result = run_cli(
        "strategies", "consolidate", str(folder), env={name: value}, fresh=True, timeout=120
    )
    assert_one_line_error(result, f"{name}={value!r} is not a whole number", "unset it")
    assert result.returncode == 1
    assert list(tmp_path.iterdir()) == []


# -- 2: an attention implementation the model class lacks ---------------------------------------
def test_flex_attention_on_gpt2_is_refused_before_the_corpus_is_tokenized(
    tmp_path: Path, data_dir: Path
) -> None:
    cache = tmp_path / "cache"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"data.cache_dir={cache}")
    result = run_cli("train", *cli, "model.attn_implementation=flex_attention")
    assert assert_one_line_error(result) == (
        "error: model.attn_implementation='flex_attention' cannot be used here (GPT2LMHeadModel "
        f"of transformers {VERSION} has no flex_attention path): pass "
        "model.attn_implementation=sdpa"
    )
    assert_no_cache_left(cache)


def refusal(compose_cfg: Callable[..., DictConfig], *overrides: str) -> str | None:
    try:
        check_train_config(compose_cfg(*overrides))
    except LMTrainError as err:
        return str(err)
    return None


BLOOM = ["model.model_type=bloom", "~model.config", "+model.config={hidden_size: 32, n_head: 2}"]
LLAMA = [
    "model.model_type=llama",
    "~model.config",
    "+model.config={hidden_size: 32, num_attention_heads: 2}",
]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        # Bloom has no sdpa path, nor flex: eager is the advice for both.
        (
            [*BLOOM, "model.attn_implementation=sdpa"],
            "model.attn_implementation='sdpa' cannot be used here (BloomForCausalLM of "
            f"transformers {VERSION} has no sdpa path): pass model.attn_implementation=eager",
        ),
        (
            [*BLOOM, "model.attn_implementation=flex_attention"],
            "model.attn_implementation='flex_attention' cannot be used here (BloomForCausalLM of "
            f"transformers {VERSION} has no flex_attention path): pass "
            "model.attn_implementation=eager",
        ),
        ([*BLOOM, "model.attn_implementation=eager"], None),
        # Llama has one; on the CPU it cannot train (test_model_inputs16).
        ([*LLAMA, "model.attn_implementation=flex_attention", "trainer.accelerator=gpu"], None),
        (["model.attn_implementation=sdpa"], None),  # GPT-2's default
    ],
)
def test_the_attention_check_reads_the_model_classs_flag(
    compose_cfg: Callable[..., DictConfig], overrides: list[str], line: str | None
) -> None:
    assert refusal(compose_cfg, *overrides) == line


def test_a_local_pretrained_folder_is_checked_by_its_saved_model_type(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    folder = tmp_path / "gpt2-folder"
    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(folder)
    overrides = [
        f"model.pretrained={folder}",
        "model.model_type=null",
        "model.config=null",
        "model.attn_implementation=flex_attention",
    ]
    assert refusal(compose_cfg, *overrides) == (
        "model.attn_implementation='flex_attention' cannot be used here (GPT2LMHeadModel of "
        f"transformers {VERSION} has no flex_attention path): pass model.attn_implementation=sdpa"
    )
    # A folder whose classes are its own code (auto_map) is left to its build (rev_diff19), on
    # a GPU (on the CPU flex_attention cannot train: test_leftouts21).
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_own.OwnGPT2"}
    (folder / "config.json").write_text(json.dumps(config))
    assert refusal(compose_cfg, *overrides, "trainer.accelerator=gpu") is None


# -- 3: model.pretrained typed as a number ------------------------------------------------------
def test_a_pretrained_folder_named_by_a_number_is_one_line_naming_the_fix(
    tmp_path: Path, data_dir: Path
) -> None:
    cache = tmp_path / "cache"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"data.cache_dir={cache}")
    result = run_cli("train", *cli, "model.pretrained=123")
    assert assert_one_line_error(result) == (
        "error: model.pretrained=123 is a number, not a folder written by save_pretrained (or "
        "lmtrain.export) or a hub id: for a folder named 123, pass model.pretrained=./123"
    )
    assert_no_cache_left(cache)


def test_the_advised_path_passes_and_other_non_text_values_are_refused(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "123").mkdir()
    assert refusal(compose_cfg, "model.pretrained=./123") is None
    assert refusal(compose_cfg, "model.pretrained=true") == (
        "model.pretrained=True is not text: pass a folder written by save_pretrained (or "
        "lmtrain.export) or a hub id"
    )
