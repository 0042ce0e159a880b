"""CausalLMModule: its loss is HF's loss, its optimizer and schedule are nanoGPT's."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.hf import check_context

GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 97}
LLAMA = {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "vocab_size": 97,
}


@pytest.mark.parametrize(("model_type", "config"), [("gpt2", GPT2), ("llama", LLAMA)])
def test_loss_equals_hf_labels_loss(model_type: str, config: dict) -> None:
    torch.manual_seed(0)
    module = CausalLMModule(model_type=model_type, config=config).eval()  # no dropout
    windows = torch.randint(0, 97, (3, 33))
    ours = module.loss(windows)
    theirs = module.model(input_ids=windows, labels=windows).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert 3.0 < ours.item() < 6.0  # about ln(97) = 4.57 for an untrained model


def test_weight_decay_only_on_matrices() -> None:
    module = CausalLMModule(
        model_type="gpt2",
        config=GPT2,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
    )
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and undecayed["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in undecayed["params"])
    n_params = sum(p.numel() for p in module.model.parameters())
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == n_params


def test_schedule_warms_up_then_decays_to_floor() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, num_warmup_steps=10, num_training_steps=100, min_lr_rate=0.1
    )
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(5e-4)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4, rel=0.01)
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))


def test_block_size_longer_than_context_is_refused() -> None:
    module = CausalLMModule(model_type="gpt2", config=GPT2)
    check_context(module.model.config, 64)
    with pytest.raises(LMTrainError, match=r"data.block_size=65 .*context \(64"):
        check_context(module.model.config, 65)
