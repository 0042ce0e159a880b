"""`torch.optim.Muon` with the Newton-Schulz iterations of same-shaped matrices run as one batch.

torch's Muon orthogonalizes one matrix at a time: 5 iterations of 3 small bf16 matmuls per
matrix, about 420 kernel calls for the 28 matrices of a 4-layer model. On a CPU at 0.8M
parameters that launch overhead, not arithmetic, made a Muon step cost about twice an AdamW one
(docs/performance.md). Stacking the matrices of one shape (after the same transpose torch does)
runs each iteration as one batched matmul, and gives torch's update exactly: the per-matrix
arithmetic is the same. modded-nanogpt batches the same way; torch has no option for it, hence
this subclass. The state (`momentum_buffer`) and the hyperparameters are torch's, so checkpoints
load into either class.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Muon


def orthogonalize(
    updates: list[Tensor], coefficients: tuple[float, float, float], steps: int, eps: float
) -> list[Tensor]:
    """torch's `_zeropower_via_newtonschulz` of each update, batched by shape: bf16, wide side
    last, each matrix scaled to Frobenius norm <= 1, then `steps` quintic iterations."""
    a, b, c = coefficients
    by_shape: dict[torch.Size, list[int]] = {}
    for i, update in enumerate(updates):
        by_shape.setdefault(update.shape, []).append(i)
    results: list[Tensor] = [updates[0]] * len(updates)
    for shape, indices in by_shape.items():
        tall = shape[0] > shape[1]
        x = torch.stack([updates[i] for i in indices]).bfloat16()
        x = x.mT if tall else x
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.mT
            gram = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)
            x = torch.baddbmm(x, gram, x, beta=a)
        x = x.mT if tall else x
        for row, i in enumerate(indices):
            results[i] = x[row]
    return results


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch's Muon learning-rate scaling by matrix shape (its `_adjust_lr`, private to torch)."""
    rows, columns = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, rows / columns))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, columns))
    return lr


class BatchedMuon(Muon):
    """`torch.optim.Muon`, same arguments and state; see the module docstring for why."""

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            buffers: list[Tensor] = []
            self._init_group(group, params, grads, buffers)
            if not params:
                continue
            momentum, lr = group["momentum"], group["lr"]
            lr = lr.item() if isinstance(lr, Tensor) else lr
            updates = []
            for grad, buffer in zip(grads, buffers, strict=True):
                buffer.lerp_(grad, 1 - momentum)
                updates.append(grad.lerp(buffer, momentum) if group["nesterov"] else buffer)
            updates = orthogonalize(
                updates, group["ns_coefficients"], group["ns_steps"], group["eps"]
            )
            for param, update in zip(params, updates, strict=True):
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss
