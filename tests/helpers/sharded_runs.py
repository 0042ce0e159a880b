"""Probes and fault-injecting pieces for runs under `trainer=fsdp_cpu` (tests/test_fsdp2*.py),
added to a run like any callback or strategy:
`+callbacks.probe._target_=tests.helpers.sharded_runs.Probe`,
`trainer.strategy._target_=tests.helpers.sharded_runs.PausingFSDP2`.

- `Probe` writes what the tests compare: losses, gradient norms, optimizer groups, full weights,
  the FSDP units, whether each rank built the model on the meta device.
- `StallAfterMidStepSave` stalls a run right after a checkpoint saved between micro-batches.
- `PausingFSDP2` stops a save of last.ckpt between the shards' write and the folder's rename.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lmtrain.strategies.fsdp import FSDP2Strategy
from tests.helpers.faults import PauseBeforeReplace, write_marker


def lightning_meta(global_step: int) -> dict[str, Any]:
    """A sharded folder's `meta.pt` as Lightning writes it for a whole save, cut to what
    resuming checks: the progress, the loops' state and the schedules' (a weights-only save
    has neither of the last two)."""
    return {
        "global_step": global_step,
        "epoch": 0,
        "loops": {"fit_loop": {}},
        "lr_schedulers": [{}],
    }


class Probe(Callback):
    """Writes `path` (rank 0) at the end of training: the global loss and the unclipped global
    gradient norm of every step, the names of the parameters in each optimizer group, the full
    weights, whether each rank built the model on the meta device, its FSDP units, whether the
    output layer is still tied and whether activation checkpointing is on. Under FSDP it
    gathers the sharded values first (on every rank)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.on_meta = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # as built, before configure_model
            self.on_meta = any(p.is_meta for p in pl_module.model.parameters())

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, *_) -> None:
        loss = trainer.strategy.reduce(outputs["loss"].detach(), reduce_op="mean")
        self.losses.append(float(loss))

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, _) -> None:
        # Called before Lightning clips the gradients.
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        self.norms.append(float(full(norm)))

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        names = {id(p): n for n, p in pl_module.model.named_parameters()}
        groups = {
            group["name"]: sorted(names[id(p)] for p in group["params"])
            for group in trainer.optimizers[0].param_groups
        }
        weights = full_state_dict(pl_module)
        # On the root device: NCCL gathers CUDA tensors only.
        flag = torch.tensor(int(self.on_meta), device=trainer.strategy.root_device)
        on_meta = trainer.strategy.all_gather(flag)
        on_meta = [bool(x) for x in on_meta.flatten().tolist()]
        from torch.distributed.fsdp import FSDPModule

        model = pl_module.model
        units = [name for name, m in model.named_modules() if isinstance(m, FSDPModule)]
        tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
        if trainer.is_global_zero:
            record = {"losses": self.losses, "norms": self.norms, "groups": groups}
            record["on_meta"] = on_meta  # per rank
            record.update(units=units, tied=tied, checkpointing=model.is_gradient_checkpointing)
            torch.save({**record, "weights": weights, "step": trainer.global_step}, self.path)


class StallAfterMidStepSave(Callback):
    """After the first checkpoint saved between the micro-batches of a step (ExactResume then
    saves the gradients so far), rank 0 writes `marker` and stalls before the next micro-batch
    (the others wait for it in their next collective), for the test to kill the run there."""

    def __init__(self, marker: str) -> None:
        self.marker, self.saved = Path(marker), False

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint) -> None:
        states = checkpoint["callbacks"].values()
        self.saved = self.saved or any("grads" in state for state in states if state)

    def on_train_batch_start(self, trainer: Trainer, *_: Any) -> None:
        if self.saved and trainer.is_global_zero:
            write_marker(self.marker, "stalled")
            time.sleep(600)


class PausingFSDP2(PauseBeforeReplace, FSDP2Strategy):
    """`PauseBeforeReplace` on the FSDP2 strategy: the temporary folder holds every rank's
    shards when the run stalls before renaming it into place."""

    def __init__(self, marker: str, pause_at: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.marker, self.pause_at = Path(marker), pause_at


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded DTensor's whole value (a collective), or the tensor itself."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict as plain CPU tensors (a collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.tensor import DTensor

    state = module.state_dict()
    if any(isinstance(v, DTensor) for v in state.values()):
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(module, options=options)
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def results(run_dir: Path) -> dict[str, Any]:
    """The probe's record (`<run_dir>/probe.pt`) and metrics.json of a finished run."""
    probe = torch.load(run_dir / "probe.pt", weights_only=True)
    return {**probe, "metrics": json.loads((run_dir / "metrics.json").read_text())}


@contextlib.contextmanager
def one_process_fsdp2(monkeypatch: Any) -> Iterator[FSDP2Strategy]:
    """An FSDP2Strategy set up on a one-process gloo mesh (its `shard` works in the test's own
    process); the process group is destroyed on exit, the address unset with `monkeypatch`."""
    import torch.distributed as dist
    from lightning.pytorch.demos.boring_classes import BoringModel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    strategy = FSDP2Strategy(process_group_backend="gloo")
    Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False)
    strategy.connect(BoringModel())
    strategy.setup_environment()
    try:
        yield strategy
    finally:
        dist.destroy_process_group()


def model_and_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    """A small model after one AdamW step, so the optimizer has state and param groups."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    return model, optimizer
