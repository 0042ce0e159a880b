"""`trainer.precision=64-true` trains in float64 end to end: the loss and the val losses kept
float64 logits as they are (both cast to float32, as HF's own loss does for bf16 logits, so a
64-true run for gradient checks got float32 losses and gradients; red team rev_num24)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtrain.models import CausalLMModule
from lmtrain.models.metrics import target_losses

GPT2 = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 97}


def test_float64_logits_give_a_float64_loss_and_float32_stays_float32() -> None:
    module = CausalLMModule(model_type="gpt2", config=GPT2).eval()
    windows = torch.randint(0, 97, (3, 33), generator=torch.Generator().manual_seed(0))
    assert module.loss(windows).dtype == torch.float32
    module = module.double()
    loss = module.loss(windows)
    logits = module(windows[:, :-1]).flatten(0, 1)
    reference = F.cross_entropy(logits, windows[:, 1:].flatten())  # float64 throughout
    assert loss.dtype == torch.float64 and loss.item() == reference.item()
    losses, _, _ = target_losses(module, windows)
    assert losses.dtype == torch.float64
    assert torch.equal(
        losses.flatten(), F.cross_entropy(logits, windows[:, 1:].flatten(), reduction="none")
    )
    assert module.to(torch.bfloat16).loss(windows).dtype == torch.float32  # as HF's loss
