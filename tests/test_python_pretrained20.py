"""`CausalLMModule(pretrained=...)` from Python (stop 50): a `pathlib.Path`, as researchers pass
folders, failed with "AttributeError: 'PosixPath' object has no attribute 'startswith'"; it is
the folder, kept in the checkpoint as text (a weights-only load reads it back). A number is one
line, as `model.pretrained=123` on the command line is (tests/test_leftouts19.py)."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmtrain.errors import LMTrainError
from lmtrain.models.module import CausalLMModule


def test_a_path_to_a_pretrained_folder_loads_its_weights_and_is_saved_as_text(
    tmp_path: Path,
) -> None:
    config = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)
    torch.manual_seed(0)
    reference = GPT2LMHeadModel(config).eval()
    reference.save_pretrained(tmp_path / "tiny")
    module = CausalLMModule(pretrained=tmp_path / "tiny").eval()
    ids = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(module(ids), reference(input_ids=ids).logits)
    trainer = L.Trainer(max_steps=0, logger=False, enable_checkpointing=False, barebones=True)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "saved.ckpt")
    saved = torch.load(tmp_path / "saved.ckpt", map_location="cpu", weights_only=True)  # no Path
    assert saved["hyper_parameters"]["pretrained"] == str(tmp_path / "tiny")


@pytest.mark.parametrize("value", [123, 1.5, ["folder"]])
def test_a_pretrained_value_that_is_not_text_is_one_line(value: object) -> None:
    with pytest.raises(LMTrainError, match="^" + re.escape(f"model.pretrained={value!r}")) as error:
        CausalLMModule(pretrained=value)  # type: ignore[arg-type]
    assert "\n" not in str(error.value)
