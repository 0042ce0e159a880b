"""Several optimizers, each over its own parameters, stepped, zeroed and saved as one: the
optimizer of an `OptimizerParts` config (`model/optimizer=muon`; lmtrain.models.optimizers)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer

from lmtrain.errors import LMTrainError


class CombinedOptimizer(Optimizer):
    """Several optimizers, each over its own parameters, stepped, zeroed and saved as one.

    Written by hand: torch has schedulers' ChainedScheduler but no optimizer that combines
    optimizers. `param_groups` are the children's own group dicts (LambdaLR, gradient clipping
    and LearningRateMonitor see every group), `state` is their per-parameter state, and
    `state_dict` holds each child's state dict under its part name.
    """

    def __init__(self, optimizers: Mapping[str, Optimizer]) -> None:
        self.optimizers = dict(optimizers)
        # The base class checks the groups and keeps them: the same dicts, in part order.
        super().__init__([g for o in self.optimizers.values() for g in o.param_groups], {})

    @property
    def state(self) -> dict[torch.Tensor, Any]:  # type: ignore[override]
        """Every child's per-parameter state: the same dicts (Lightning moves their tensors to
        the training device in place)."""
        return {p: s for o in self.optimizers.values() for p, s in o.state.items()}

    @state.setter
    def state(self, value: Any) -> None:
        if value:  # Optimizer.__init__ sets an empty state: the children hold the real one
            raise AttributeError("CombinedOptimizer's state is its optimizers' own")

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Run `closure` once (Lightning's forward and backward), then step every optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers.values():
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Each child loads its own part; a state saved by another optimizer config is refused."""
        if set(state_dict) != set(self.optimizers):
            raise LMTrainError(
                f"the checkpoint's optimizer state has {sorted(state_dict)[:4]}, not this "
                f"model.optimizer's parts {sorted(self.optimizers)}: resume with the optimizer "
                "config the checkpoint was trained with"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state_dict[name])
        # torch's load_state_dict replaces the children's group dicts: follow them.
        self.param_groups = [g for o in self.optimizers.values() for g in o.param_groups]
