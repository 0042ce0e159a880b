"""Two refusals that came after the corpus was tokenized and the model built (left out of stops
48-50), now made by the config checks before any work, in the same words as before:

- `callbacks.model_checkpoint.save_on_train_epoch_end=true` (refused as the callback is built);
- `model.attn_implementation=flex_attention` on the CPU (refused at `CausalLMModule.setup`).

The later refusals stay, for a plain Trainer built in Python. And a run without the checkpoint
callback writes no checkpoint (rev_sweep21).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer

from lmtrain.callbacks.checkpoint import StepScheduledCheckpoint
from lmtrain.models.hf import check_trainable_attention
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli

EPOCH_END = (
    "save_on_train_epoch_end=true ranks the best checkpoint at the epoch's end, after last.ckpt "
    "is written for the validation before it, so a run stopped in between loses it: drop the "
    "key (the best checkpoint is chosen right after each validation)"
)
FLEX_ON_CPU = (
    "model.attn_implementation='flex_attention' cannot train on the CPU (PyTorch's "
    "FlexAttention has no backward there): pass model.attn_implementation=sdpa, or train on a GPU"
)
TINY_LLAMA = (
    "model.model_type=llama",
    "~model.config",
    "+model.config={hidden_size: 32, num_attention_heads: 2, num_hidden_layers: 1}",
)


def test_epoch_end_ranking_is_refused_before_the_corpus_is_tokenized(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    key = "+callbacks.model_checkpoint.save_on_train_epoch_end=true"
    cli = tiny_cli(tmp_path, cache, f"hydra.run.dir={tmp_path / 'run'}", "logger=none", key)
    result = run_cli("train", *cli)
    assert assert_one_line_error(result) == f"error: callbacks.model_checkpoint.{EPOCH_END}"
    assert_no_cache_left(cache)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_checkpoint_callback_built_in_python_still_refuses_it(tmp_path: Path) -> None:
    build = lambda: StepScheduledCheckpoint(dirpath=tmp_path, save_on_train_epoch_end=True)  # noqa: E731
    assert refusal(build) == f"callbacks.model_checkpoint.{EPOCH_END}"
    assert StepScheduledCheckpoint(dirpath=tmp_path).dirpath == str(tmp_path)  # the default


def test_flex_attention_on_the_cpu_is_refused_before_the_corpus_is_tokenized(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    cli = tiny_cli(tmp_path, cache, f"hydra.run.dir={tmp_path / 'run'}", "logger=none")
    result = run_cli("train", *cli, *TINY_LLAMA, "model.attn_implementation=flex_attention")
    assert assert_one_line_error(result) == f"error: {FLEX_ON_CPU}"
    assert_no_cache_left(cache)
    # trainer.accelerator=cpu named, as on a machine with a GPU.
    cpu = ("trainer.accelerator=cpu", "model.attn_implementation=flex_attention")
    result = run_cli("train", *cli, *TINY_LLAMA, *cpu)
    assert assert_one_line_error(result) == f"error: {FLEX_ON_CPU}"


def test_a_plain_trainer_on_the_cpu_still_refuses_flex_attention_at_setup() -> None:
    strategy = Trainer(accelerator="cpu", logger=False).strategy
    check = lambda name: lambda: check_trainable_attention(name, strategy)  # noqa: E731
    assert refusal(check("flex_attention")) == FLEX_ON_CPU
    assert check("sdpa")() is None


@pytest.mark.parametrize("logger", ["csv", "none"])
def test_no_checkpoint_callback_writes_no_checkpoint(
    tmp_path: Path, data_dir: Path, logger: str
) -> None:
    """`callbacks.model_checkpoint=null` (rev_sweep21): Lightning added its own ModelCheckpoint,
    which wrote a .ckpt at each validation under the logger's folder (csv/checkpoints/,
    W&B's and MLflow's run folders) or in checkpoints/. `+trainer.enable_checkpointing=true`
    still asks for Lightning's."""
    run = tmp_path / "run"
    off = ("callbacks.model_checkpoint=null", f"logger={logger}", f"hydra.run.dir={run}")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *off))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
    assert sorted(p.name for p in run.rglob("*.ckpt")) == []
    lightnings = tmp_path / "lightnings"
    on = (*off[:2], f"hydra.run.dir={lightnings}", "+trainer.enable_checkpointing=true")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *on))
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in lightnings.rglob("*.ckpt")) == ["epoch=0-step=4.ckpt"]
