"""FLOPs of one training micro-batch, for Lightning's ThroughputMonitor (FLOP/s and MFU).

Counted, not estimated: PyTorch's FlopCounterMode runs forward and backward of a copy of the
model on the meta device (no memory, no arithmetic), through Lightning's `measure_flops`. It
counts matrix multiplies and attention exactly, whatever the architecture, so GPT-2, Llama or a
pretrained model need no formula of their own.
"""

from __future__ import annotations

import torch
from lightning.fabric.utilities.throughput import measure_flops
from transformers import AutoModelForCausalLM, PretrainedConfig


def flops_per_batch(config: PretrainedConfig, batch_size: int, seq_len: int) -> int:
    """Forward + backward FLOPs of `batch_size` sequences of `seq_len` tokens."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    # use_cache=True whatever the config says: without a cache (and a mask), transformers looks
    # for packed sequences in the position ids with `.item()`, which meta tensors cannot do
    # (`model.config.use_cache=false` was a traceback here). The count is the same.
    return measure_flops(
        model,
        lambda: model(input_ids=input_ids, use_cache=True).logits,
        loss_fn=lambda logits: logits.sum(),
    )
