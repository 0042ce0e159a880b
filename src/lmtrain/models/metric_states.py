"""The validation metrics' running sums kept in float32 whatever `trainer.precision` is.

Under `trainer.precision=bf16-true` (or `16-true`) Lightning converts the whole LightningModule
with `module.to(dtype)`, and a torchmetrics `Metric` is a submodule: its float states (the sums
of `MeanMetric` and `BitsPerByte`) and their defaults became bf16 too. bf16 holds 8 bits of
mantissa, so a sum of a few hundred windows' losses stops growing: a whole-split eval of a
model whose loss was 4.08 reported 7.75, and the best checkpoint and early stopping read it.
The model computes in bf16; the metrics add up its float32 losses (`target_losses`) in float32,
as under `32-true`; under `64-true` in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def reset_in_float32(*metrics: Metric | None, model_dtype: torch.dtype = torch.float32) -> None:
    """Reset each of `metrics` (None: absent), with its float states in float32 at least, or
    in the model's dtype where that is wider (`64-true`: torchmetrics' `Metric.double()`,
    which Lightning calls, leaves the states in float32, and val/loss was summed in float32).

    Called as each validation starts: states made under `trainer.validate`'s inference mode
    could not be updated by a later fit's validation, so they are made anew under its mode.
    The states are read, not `Metric.dtype`: Lightning's later move to the device sets that
    back to float32 over bf16 states. `Metric.to` converts the float states alone (a count in
    int64 stays one); torchmetrics' `set_dtype` would convert every state, integers included.
    """
    dtype = torch.promote_types(model_dtype, torch.float32)
    for metric in metrics:
        if metric is None:
            continue
        metric.reset()
        if any(other_float(state, dtype) for state in metric.metric_state.values()):
            metric.to(dtype=dtype)


def other_float(state: Tensor | list[Tensor], dtype: torch.dtype) -> bool:
    """Whether a metric state is a float tensor of another dtype than `dtype`."""
    return isinstance(state, Tensor) and state.is_floating_point() and state.dtype != dtype
