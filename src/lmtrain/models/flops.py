"""FLOPs of one training micro-batch, for Lightning's ThroughputMonitor (FLOP/s and MFU).

Counted, not estimated: PyTorch's FlopCounterMode runs forward and backward of a copy of the
model on the meta device (no memory, no arithmetic), through Lightning's `measure_flops`. It
counts matrix multiplies and attention exactly, whatever the architecture, so GPT-2, Llama or a
pretrained model need no formula of their own.
"""

from __future__ import annotations

import copy

import torch
from lightning.fabric.utilities.throughput import measure_flops
from transformers import AutoModelForCausalLM, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING


def flops_per_batch(config: PretrainedConfig, batch_size: int, seq_len: int) -> int:
    """Forward + backward FLOPs of `batch_size` sequences of `seq_len` tokens.

    Counted with sdpa attention (eager where the architecture has none), whatever the model
    runs: flex_attention refuses meta tensors (a traceback before the first step), a kernel
    built for one device may too, and every implementation multiplies the same matrices.
    """
    kind = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    attention = "sdpa" if getattr(kind, "_supports_sdpa", False) else "eager"
    # A copy: from_config sets the attention on the config it is given, the training model's.
    # No pad id: with one, the forward looks for it in the ids (`in`, an `.item()` meta tensors
    # cannot do: `+model.config.pad_token_id=0` was a traceback here). The count is the same.
    counted = copy.deepcopy(config)
    counted.pad_token_id = None
    with torch.device("meta"):
        # The config may come from a pretrained folder: never its auto_map code.
        model = AutoModelForCausalLM.from_config(
            counted, trust_remote_code=False, attn_implementation=attention
        )
        input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    # use_cache=True whatever the config says: without a cache (and a mask), transformers looks
    # for packed sequences in the position ids with `.item()`, which meta tensors cannot do
    # (`model.config.use_cache=false` was a traceback here). The count is the same.
    return measure_flops(
        model,
        lambda: model(input_ids=input_ids, use_cache=True).logits,
        loss_fn=lambda logits: logits.sum(),
    )


def scaled(train_flops: int | None, training: bool, window_lengths: tuple[int, int]) -> int | None:
    """FLOPs of the current micro-batch from `train_flops` (forward and backward at the full
    window length): the forward alone while validating (a third: backward costs two forwards).
    A warm-up's shorter windows (`window_lengths`: this step's, the data's) scale it linearly:
    exact for the matmuls, an overcount of attention's quadratic part, small at 64 tokens."""
    if train_flops is None:
        return None
    if not training:
        return train_flops // 3
    cut, full = window_lengths
    return train_flops * cut // full if cut else train_flops
