"""`lmtrain.generate` warns when text runs past the windows a from-scratch model was trained on.

Red team: a model trained on 16-token windows (64 positions) generated 58 new tokens with no
word said, and its text turned to garbage past position 16. The tokens are still generated (the
user asked for them); a checkpoint and its export warn alike, a fine-tuned model does not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmtrain.generate import generate, warn_past_trained_windows
from lmtrain.models.checkpoint import load_model
from tests.helpers.compose import compose
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import export_tiny, train_tiny

# 16-token windows in a model of 64 positions (TINY_GPT2), 2 steps: the red team's setup.
SHORT_RUN = [
    "data.tokenizer.kind=char",
    "data.block_size=16",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "callbacks.text_samples=null",
]
PAST = "past the 16-token windows this model was trained on from scratch (data.block_size=16)"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("trained-block")
    return train_tiny(root / "run", data_dir, write_corpus(root / "corpus"), *SHORT_RUN)


def generated(path: Path, tmp_path: Path, data_dir: Path, new_tokens: int) -> list[str]:
    """Greedy completions of "The " (4 characters, 4 tokens) from `path`."""
    settings = ["prompt='The '", "greedy=true", "stop_at_eos=false", "device=cpu"]
    cfg = compose(
        "generate", tmp_path / "gen", data_dir, f"ckpt_path={path}", *settings,
        f"max_new_tokens={new_tokens}",
    )  # fmt: skip
    return generate(cfg)


def test_a_checkpoint_and_its_export_warn_once_past_the_trained_windows(
    ckpt: Path, tmp_path: Path, data_dir: Path, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        generated(ckpt, tmp_path, data_dir, 12)  # 4 + 12 = 16: within the windows
    assert PAST not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        (text,) = generated(ckpt, tmp_path, data_dir, 40)
    warnings = [r.getMessage() for r in caplog.records if PAST in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert warnings[0].startswith("the prompt (4 tokens) and its new tokens run to 44 tokens")
    assert "pass max_new_tokens=12 or fewer, or train with a larger data.block_size" in warnings[0]
    assert "capped" not in caplog.text  # 44 fits the model's 64 positions: nothing cut
    assert text.startswith("The ") and len(text) > 16

    exported = export_tiny(ckpt, tmp_path / "export", data_dir)  # its lmtrain.json's run config
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        generated(exported, tmp_path, data_dir, 40)
    assert PAST in caplog.text


def test_a_fine_tuned_model_or_a_prompt_past_the_windows(ckpt: Path, caplog) -> None:
    loaded = load_model(ckpt)
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        warn_past_trained_windows(40, loaded, "The cat sat.\nA bird")  # 19 tokens
    assert "pass a prompt shorter than 16 tokens, or train with a larger" in caplog.text
    caplog.clear()
    loaded.run_config["model"]["pretrained"] = "gpt2"  # saw longer text before its fine-tuning
    with caplog.at_level(logging.WARNING, logger="lmtrain.generate"):
        warn_past_trained_windows(40, loaded, "The ")
    assert PAST not in caplog.text
