"""A resumed checkpoint's optimizer state against the optimizer this module builds, before
Lightning restores it.

torch's `Optimizer.load_state_dict` checks the number of parameter groups and of parameters per
group (a multi-line ValueError traceback) but not the tensors in each parameter's state: an
`exp_avg` of another shape loads, and the default fused AdamW then reads and writes past its end
(a segfault, on a file that lmtrain treats as untrusted). The tensor digest does not help: it is
a checksum that anyone who edits the file can write again. So the state's layout is compared with
the groups that `lmtrain.models.optimizers` builds (the same grouping functions, on the module's
trainable parameters) and a mismatch is refused in one line. A sharded (FSDP) folder's optimizer
state never reaches here: the strategy hands it to torch.distributed.checkpoint, which checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule

from lmtrain.errors import LMTrainError
from lmtrain.models.optimizers import OptimizerParts, decay_groups

# Per-parameter state entries that torch's optimizers (and Muon) keep in the parameter's shape:
# the ones a fused or foreach kernel walks element by element alongside the parameter.
PARAM_SHAPED = frozenset(
    {
        "exp_avg",  # Adam, AdamW, NAdam, RAdam, Adamax
        "exp_avg_sq",  # Adam, AdamW, NAdam, RAdam, Adafactor (1-D)
        "max_exp_avg_sq",  # amsgrad
        "exp_inf",  # Adamax
        "momentum_buffer",  # SGD, RMSprop, Muon
        "sum",  # Adagrad
        "square_avg",  # RMSprop, Adadelta
        "acc_delta",  # Adadelta
        "grad_avg",  # RMSprop (centered)
        "prev",  # Rprop
        "step_size",  # Rprop
        "ax",  # ASGD
    }
)
# Entries that are one number (a 0-d tensor, or a float in older checkpoints).
SCALARS = frozenset({"step", "mu_product", "eta", "mu"})
# Other entries (Adafactor's row_var and col_var, another library's own) are not checked: their
# shapes are the optimizer's business.

Shapes = list[list[tuple[str, torch.Size]]]  # per group: (name, shape) of each parameter


def check_optimizer_state(
    module: LightningModule, checkpoint: Mapping[str, Any], ckpt_path: Any
) -> None:
    """Refuse, in one line naming `ckpt_path` and what differs, an optimizer state that does
    not fit the optimizer `module.configure_optimizers` will build (called before it exists)."""
    states = checkpoint.get("optimizer_states")
    if states is None:  # a sharded folder's: loaded (and checked) by the strategy
        return
    problem = states_problem(module, states)
    if problem is None:
        return
    raise LMTrainError(
        f"ckpt_path={str(ckpt_path)!r} holds an optimizer state that does not fit this model's "
        f"optimizer: {problem}: the file is damaged or was saved by another model or optimizer "
        "config: resume from an intact checkpoint of this run, or drop ckpt_path to start from "
        "scratch"
    )


def states_problem(module: LightningModule, states: Any) -> str | None:
    """What is wrong with the checkpoint's `optimizer_states` (one optimizer per module)."""
    if not isinstance(states, list):
        return f"its optimizer_states is a {type(states).__name__}, not a list"
    if len(states) != 1:
        return f"it holds {len(states)} optimizer states, not one"
    (state,) = states
    if not isinstance(state, Mapping):
        return f"its optimizer state is a {type(state).__name__}, not a mapping"
    factory = getattr(module, "optimizer_factory", None)
    named = [(n, p) for n, p in module.model.named_parameters() if p.requires_grad]
    decay_names, names = module.decay_names, {id(p): n for n, p in named}
    if not isinstance(factory, OptimizerParts):
        return torch_state_problem(state, shapes(decay_groups(named, decay_names), names), "")
    if set(state) != set(factory.parts):
        return None  # CombinedOptimizer.load_state_dict refuses another set of parts
    for part, share in factory.split(module.model).items():
        groups = [g for g in decay_groups(share, decay_names) if g["params"]]
        problem = torch_state_problem(state[part], shapes(groups, names), f"part {part}: ")
        if problem is not None:
            return problem
    return None


def shapes(groups: list[dict[str, Any]], names: dict[int, str]) -> Shapes:
    """The name and shape of each parameter of each group (`names`: by the parameter's id)."""
    return [[(names.get(id(p), ""), p.shape) for p in g["params"]] for g in groups]


def torch_state_problem(state: Any, expected: Shapes, where: str) -> str | None:
    """What is wrong with one torch optimizer's `state_dict()` (`state`, `param_groups` of
    parameter ids) against the groups `expected`; `where` prefixes the answer."""
    if not isinstance(state, Mapping):
        return f"{where}its optimizer state is a {type(state).__name__}, not a mapping"
    groups, per_param = state.get("param_groups"), state.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, Mapping):
        return f"{where}its optimizer state lacks param_groups or state"
    if len(groups) != len(expected):
        count = f"{len(groups)} parameter group{'' if len(groups) == 1 else 's'}"
        return f"{where}it has {count}, this optimizer {len(expected)}"
    for index, (group, params) in enumerate(zip(groups, expected, strict=True)):
        ids = group.get("params") if isinstance(group, Mapping) else None
        if not isinstance(ids, list):
            return f"{where}its parameter group {index} has no list of params"
        if len(ids) != len(params):
            return f"{where}group {index} has {len(ids)} parameters, this optimizer's {len(params)}"
        for position, (saved, (name, shape)) in enumerate(zip(ids, params, strict=True)):
            if not isinstance(saved, int | str):
                kind = type(saved).__name__
                return f"{where}group {index} param {position} is a {kind}, not an id"
            entries = per_param.get(saved, {})  # none yet: the optimizer starts one
            problem = entries_problem(entries, shape)
            if problem is not None:
                return f"{where}group {index} param {position} ({name})'s {problem}"
    return None


def entries_problem(entries: Any, shape: torch.Size) -> str | None:
    """What is wrong with one parameter's state `entries` for a parameter of `shape`."""
    if not isinstance(entries, Mapping):
        return f"state is a {type(entries).__name__}, not a mapping"
    for key, value in entries.items():
        if key in SCALARS and isinstance(value, torch.Tensor) and value.numel() != 1:
            return f"{key} holds {value.numel()} values, not one"
        if key not in PARAM_SHAPED or value is None:  # SGD without momentum saved None
            continue
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        if value.shape != shape:
            return f"{key} has shape {tuple(value.shape)} but the parameter {tuple(shape)}"
        if value.layout != torch.strided:
            return f"{key} is a {value.layout} tensor, not a dense one"
    return None
