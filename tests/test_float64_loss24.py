"""`trainer.precision=64-true` trains in float64 end to end: the loss and the val losses kept
float64 logits as they are (both cast to float32, as HF's own loss does for bf16 logits, so a
64-true run for gradient checks got float32 losses and gradients; red team rev_num24)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmtrain.models import CausalLMModule
from lmtrain.models.metric_states import reset_in_float32
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


def test_float64_val_sums_stay_float64_and_bf16_ones_become_float32() -> None:
    """torchmetrics' `Metric.double()` (Lightning's 64-true conversion) leaves the sums in
    float32: val/loss of a 64-true run was summed in float32 (rev_diff24)."""
    module = CausalLMModule(model_type="gpt2", config=GPT2).double()
    reset_in_float32(module.val_loss, model_dtype=module.dtype)
    losses = torch.full((1000,), 1 / 3, dtype=torch.float64)
    module.val_loss.update(losses)
    assert module.val_loss.compute().dtype == torch.float64
    assert module.val_loss.compute().item() == losses.mean().item()
    module.val_loss.to(dtype=torch.bfloat16)
    reset_in_float32(module.val_loss, model_dtype=torch.bfloat16)
    assert {s.dtype for s in module.val_loss.metric_state.values()} == {torch.float32}
