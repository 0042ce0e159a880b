"""What tests/test_grad_norm.py, test_bpb.py and test_seq_len_warmup.py add to a run or run on
other processes.

- `RecordGradNorms`: a callback (`+callbacks.record._target_=...`) that writes the gradient
  norm of every optimizer step, measured on its own, for the test to compare with the logged one.
- `RecordWindowLengths`: a callback that writes the input length the HF model was given at
  every training step and validation batch (tests/test_seq_len_warmup.py).
- `on_two_gloo_ranks`: a function run on two gloo processes, and what each returned; the
  functions it runs here (`bpb_on_rank`, `clip_sharded_on_rank`) import only what they use, so
  the processes start in seconds.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch import Callback, LightningModule, Trainer
from torch.optim import Optimizer


class RecordWindowLengths(Callback):
    """Writes `{"train": [(step, tokens per window), ...], "val": [...]}` to `path` (JSON) at the
    end of training: the length of the inputs the HF model itself was given at each forward of
    the fit, read by a forward pre-hook (what the model read, not what the module reports)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lengths: dict[str, list[tuple[int, int]]] = {"train": [], "val": []}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        def record(model: torch.nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
            split = "train" if model.training else "val"
            self.lengths[split].append((trainer.global_step, kwargs["input_ids"].shape[1]))

        self.hook = pl_module.model.register_forward_pre_hook(record, with_kwargs=True)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.hook.remove()
        Path(self.path).write_text(json.dumps(self.lengths))


class RecordGradNorms(Callback):
    """Writes `torch.nn.utils.get_total_norm` of the gradients at every optimizer step to `path`
    (JSON) at the end of training. Lightning calls this hook before it clips."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.norms: list[float] = []

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Optimizer
    ) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        Path(self.path).write_text(json.dumps(self.norms))


def on_two_gloo_ranks(function: Callable[[int], Any]) -> dict[int, Any]:
    """`function(rank)` on two processes in one gloo group; rank -> what it returned. The ranks
    meet through a file, not a port: no port to collide with another test's."""
    with tempfile.TemporaryDirectory() as folder, mp.Manager() as manager:
        results = manager.dict()
        store = f"file://{Path(folder) / 'store'}"
        mp.spawn(_run_rank, args=(function, store, results), nprocs=2, join=True)
        return dict(results)


def _run_rank(rank: int, function: Callable[[int], Any], store: str, results: Any) -> None:
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=2)
    try:
        results[rank] = function(rank)
    finally:
        dist.destroy_process_group()


def bpb_on_rank(rank: int) -> float:
    """val/bpb of BitsPerByte after rank 0 saw 3 tokens of 1 nat and 2 bytes each and rank 1 one
    token of 4 nats and 4 bytes, a padding window, a padding-only batch, and one token of 2 nats
    and 4 bytes: (3 + 6) nats over (6 + 8) bytes."""
    from lmtrain.data.tokenizers import char_tokenizer
    from lmtrain.models.metrics import BitsPerByte

    tokenizer = char_tokenizer(["aé🙂"])  # a: 1 byte, é: 2, 🙂: 4
    a, e, smile = (tokenizer.convert_tokens_to_ids(c) for c in "aé🙂")
    metric = BitsPerByte(tokenizer)
    if rank == 0:
        metric.update(torch.ones(1, 3), torch.tensor([[e, e, e]]), torch.tensor([True]))
    else:
        losses, targets = torch.tensor([[4.0], [0.0]]), torch.tensor([[smile], [a]])
        metric.update(losses, targets, torch.tensor([True, False]))
        metric.update(torch.tensor([[0.0]]), torch.tensor([[a]]), torch.tensor([False]))
        metric.update(torch.tensor([[2.0]]), torch.tensor([[smile]]), torch.tensor([True]))
    return float(metric.compute())


def clip_sharded_on_rank(rank: int) -> tuple[float, float, bool, float]:
    """The same two-layer model whole and FSDP2-sharded (fully_shard), the same input on both
    ranks; clipped by `clip_grad_norm` at half the whole model's norm. Returns (the norm it
    returned, the whole model's, whether it is a DTensor, the largest difference between the
    clipped shards, gathered, and the whole model's gradients scaled as torch scales them)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    from lmtrain.models.metrics import clip_grad_norm

    torch.manual_seed(0)
    whole = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    sharded = copy.deepcopy(whole)
    fully_shard(sharded, mesh=init_device_mesh("cpu", (2,)))
    x = torch.randn(4, 8)
    for model in (whole, sharded):
        model(x).square().sum().backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in whole.parameters()])
    max_norm = float(expected) / 2
    norm = clip_grad_norm(list(sharded.parameters()), max_norm)
    scale = max_norm / (expected + 1e-6)
    clipped = [p.grad.full_tensor() for p in sharded.parameters()]
    pairs = zip(clipped, whole.parameters(), strict=True)
    error = max(float((g - w.grad * scale).abs().max()) for g, w in pairs)
    return float(norm), float(expected), isinstance(norm, DTensor), error
