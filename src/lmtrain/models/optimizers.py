"""The optimizer and learning-rate schedule of `CausalLMModule`, from its trainable parameters.

The module hands over its model (whose trainable parameters train) and the names that get
weight decay (chosen on the unsharded model); this module groups them and builds the optimizer
and the schedule the config describes. A plain optimizer config (`model/optimizer=adamw`) gets
two groups, `decay` and `no_decay`. An `OptimizerParts` config (`model/optimizer=muon`) splits the
parameters into named parts, each with an optimizer and schedule of its own (Muon for the
blocks' weight matrices, AdamW for the rest, as modded-nanogpt), stepped together as one
`CombinedOptimizer`: Lightning's automatic optimization drives one optimizer per module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau
from transformers.pytorch_utils import Conv1D

from lmtrain.errors import LMTrainError, RankAgreedError
from lmtrain.models.combined_optimizer import CombinedOptimizer
from lmtrain.models.hf import decoder_blocks
from lmtrain.utils.optimizer_values import MUON_ADVICE, muon_over_whole_model
from lmtrain.utils.partial_checks import (
    PartialProblems,
    check_optimizer_partial,
    check_scheduler_partial,
)
from lmtrain.utils.strategy_checks import PARTS_UNDER_FSDP

# What a part's `params` may select: the 2-D weights of the Linear (GPT-2: Conv1D) layers inside
# the transformer blocks, or every trainable parameter that no other part selects.
SELECTIONS = ("block_matrices", "rest")
PART_KEYS = ("params", "optimizer", "scheduler")

Named = list[tuple[str, torch.nn.Parameter]]


def decay_groups(
    named: Iterable[tuple[str, torch.nn.Parameter]], decay_names: set[str]
) -> list[dict[str, Any]]:
    """Weight decay on matrices only (embeddings, linear weights), not on biases and norm gains.

    `decay_names` are the plain model's: a model compiled after the module was built
    (`module.model = torch.compile(module.model)`) names its parameters with torch.compile's
    `_orig_mod.`, which matched none of them, and weight decay was silently off.
    """
    named = [(n.replace("_orig_mod.", ""), p) for n, p in named]
    return [
        {"name": "decay", "params": [p for n, p in named if n in decay_names]},
        {
            "name": "no_decay",
            "params": [p for n, p in named if n not in decay_names],
            "weight_decay": 0.0,
        },
    ]


def configure_optimizers(
    model: torch.nn.Module,
    decay_names: set[str],
    optimizer_factory: Callable[..., Optimizer],
    scheduler_factory: Callable[..., LRScheduler] | None,
    num_training_steps: int,
) -> dict[str, Any]:
    """Lightning's `configure_optimizers` answer: the optimizer over the trainable parameters
    of `model`, grouped, and the scheduler stepped once per optimizer step."""
    if isinstance(optimizer_factory, OptimizerParts):
        return optimizer_factory.configure(
            model, decay_names, scheduler_factory, num_training_steps
        )
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = build_optimizer(
        "model.optimizer", optimizer_factory, decay_groups(named, decay_names)
    )
    if scheduler_factory is None:
        return scheduled(optimizer, LambdaLR(optimizer, constant))
    schedule = scheduler_factory(optimizer, num_training_steps=num_training_steps)
    if isinstance(schedule, ReduceLROnPlateau):  # Lightning's refusal blamed the trainer
        raise LMTrainError(
            "model.scheduler builds a ReduceLROnPlateau, which steps on a monitored metric: "
            "lmtrain steps its schedule once per optimizer step and hands it "
            "num_training_steps: use a schedule of steps (model/scheduler=cosine, a LambdaLR, "
            "transformers' get_*_schedule_with_warmup)"
        )
    return scheduled(optimizer, schedule)


def build_optimizer(
    key: str, factory: Callable[..., Optimizer], groups: list[dict[str, Any]]
) -> Optimizer:
    """`factory(groups)`, with torch's refusal of a value (a negative lr, fused with foreach, a
    Muon given 1-D parameters) as one line naming `key` and what the factory binds."""
    try:
        return factory(groups)
    except torch.OutOfMemoryError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:
        func = getattr(factory, "func", factory)
        bound = getattr(factory, "keywords", {})
        given = ", ".join(f"{k}={v!r}" for k, v in bound.items())
        what = f"{getattr(func, '__name__', repr(func))}({given})"
        said = " ".join(str(err).split())  # torch's message, on one line
        advice = "change that value"
        if muon_over_whole_model(func) and key == "model.optimizer":  # LoRA or freeze left 1-D
            advice = f"{MUON_ADVICE}: use model/optimizer=muon (Muon for the blocks' matrices)"
        raise LMTrainError(f"{key}: {said} (given {what}): {advice}") from err


def scheduled(optimizer: Optimizer, scheduler: LRScheduler) -> dict[str, Any]:
    """The optimizer and its schedule, stepped once per optimizer step. `model.scheduler=null`
    gets a constant one: Lightning's LearningRateMonitor names the rates of an optimizer without
    a schedule by its class (`lr-AdamW/decay`), and a resume that turned a schedule on or off
    split the run's rates over two sets of columns; with one they are always `train/lr/<group>`."""
    return {
        "optimizer": optimizer,
        "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "train/lr"},
    }


def block_matrices(model: torch.nn.Module) -> set[int]:
    """The ids of the 2-D weights of the Linear and Conv1D layers inside the transformer blocks
    (attention and MLP), chosen by module type and identity: never the token or position
    embeddings or the output layer (tied or not), norms or biases."""
    embeddings = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        layer = getattr(model, getter, lambda: None)()
        if layer is not None:
            embeddings.add(id(layer.weight))
    return {
        id(module.weight)
        for block in decoder_blocks(model)
        for module in block.modules()
        if isinstance(module, nn.Linear | Conv1D)
        and module.weight.ndim == 2
        and id(module.weight) not in embeddings
    }


class OptimizerParts:
    """Named parts of the trainable parameters, each with its own optimizer and schedule.

    Each part is a mapping: `params` (one of `SELECTIONS`), `optimizer` (a partial that takes
    parameter groups, as `model/optimizer=adamw`) and `scheduler`: null for the model's schedule
    (`model.scheduler`), keys that change it (`{num_warmup_steps: 0}`), or a partial of its own.
    Every trainable parameter must fall in exactly one part, and every part must get some.
    """

    def __init__(self, **parts: Mapping[str, Any]) -> None:
        stray = [k for k, v in parts.items() if not isinstance(v, Mapping)]
        if stray:  # experiments set model.optimizer.lr and the like for model/optimizer=adamw
            raise LMTrainError(
                f"model.optimizer.{', '.join(f'{k}={parts[k]!r}' for k in stray)} "
                f"{'is not a part' if len(stray) == 1 else 'are not parts'} of model.optimizer (a "
                "part holds params, optimizer and scheduler): drop with "
                f"{' '.join(f'~model.optimizer.{k}' for k in stray)} and set a part's own "
                "(model.optimizer.adamw.optimizer.lr=...)"
            )
        self.parts = {name: dict(part) for name, part in parts.items()}
        if not self.parts:
            raise LMTrainError("model.optimizer has no parts: give each a params and an optimizer")
        selected: dict[str, str] = {}
        for name, part in self.parts.items():
            where = f"model.optimizer.{name}"
            unknown = sorted(set(part) - set(PART_KEYS))
            if unknown:
                raise LMTrainError(f"{where} has unknown keys {unknown}: use {list(PART_KEYS)}")
            params = part.get("params")
            if params not in SELECTIONS:
                raise LMTrainError(f"{where}.params={params!r}: use one of {list(SELECTIONS)}")
            if params in selected:
                raise LMTrainError(
                    f"{where}.params={params} is model.optimizer.{selected[params]}.params too: "
                    "each selection belongs to one part"
                )
            selected[params] = name
            own = part.get("scheduler")
            if not (own is None or callable(own) or isinstance(own, Mapping)):
                raise LMTrainError(
                    f"{where}.scheduler={own!r} is not a schedule: pass null (model.scheduler), "
                    "keys that change model.scheduler ({num_warmup_steps: 0}), or a partial of "
                    "its own (with _target_)"
                )
            if not callable(part.get("optimizer")):
                raise LMTrainError(
                    f"{where}.optimizer is {part.get('optimizer')!r}: give an optimizer partial "
                    "(_target_: torch.optim.AdamW, _partial_: true, ...)"
                )
        problems = PartialProblems()  # the partials' values, as the command line's checks
        for name, part in self.parts.items():
            where = f"model.optimizer.{name}"
            check_optimizer_partial(f"{where}.optimizer", part["optimizer"], problems, whole=False)
            if part.get("scheduler") is not None:
                check_scheduler_partial(f"{where}.scheduler", part["scheduler"], problems)
        problems.raise_if_any()

    def split(self, model: torch.nn.Module) -> dict[str, Named]:
        """The trainable parameters of each part, by name; one line naming what is wrong when
        a part gets none or a parameter gets no part."""
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        matrices = block_matrices(model)
        by_selection: dict[str, Named] = {
            "block_matrices": [(n, p) for n, p in named if id(p) in matrices],
            "rest": [(n, p) for n, p in named if id(p) not in matrices],
        }
        split = {name: by_selection[part["params"]] for name, part in self.parts.items()}
        empty = [name for name, share in split.items() if not share]
        if empty:
            part = self.parts[empty[0]]
            raise LMTrainError(
                f"model.optimizer.{empty[0]} (params={part['params']}) gets no trainable "
                f"parameter of this {type(model).__name__}: drop that part "
                f"('~model.optimizer.{empty[0]}'), or train with model/optimizer=adamw"
            )
        taken = {n for share in split.values() for n, _ in share}
        left = [n for n, _ in named if n not in taken]
        if left:
            raise LMTrainError(
                f"{len(left)} trainable parameters get no optimizer ({', '.join(left[:3])}, ...): "
                "add a part with params: rest to model.optimizer"
            )
        return split

    def names(self, model: torch.nn.Module) -> dict[str, list[str]]:
        """The names of the parameters each part trains (what the tests and users check)."""
        return {part: [n for n, _ in share] for part, share in self.split(model).items()}

    def configure(
        self,
        model: torch.nn.Module,
        decay_names: set[str],
        shared_scheduler: Callable[..., LRScheduler] | None,
        num_training_steps: int,
    ) -> dict[str, Any]:
        """`configure_optimizers` for parts: one optimizer per part over its `decay` and
        `no_decay` groups (named `<part>/decay`, ...), combined, and one LambdaLR over all the
        groups whose per-group factors are each part's own schedule."""
        split = self.split(model)
        if any(is_sharded(p) for share in split.values() for _, p in share):
            # torch.distributed.checkpoint saves one torch optimizer's state, and Muon's
            # Newton-Schulz iteration would gather every sharded matrix.
            raise RankAgreedError(PARTS_UNDER_FSDP.format(parts=", ".join(self.parts)))
        optimizers = {}
        for name, share in split.items():
            groups = [g for g in decay_groups(share, decay_names) if g["params"]]
            for group in groups:
                group["name"] = f"{name}/{group['name']}"
            where = f"model.optimizer.{name}.optimizer"
            optimizers[name] = build_optimizer(where, self.parts[name]["optimizer"], groups)
        optimizer = CombinedOptimizer(optimizers)
        schedules = {name: self.schedule(name, shared_scheduler) for name in optimizers}
        factors: list[Callable[[int], float]] = []
        for name, child in optimizers.items():
            factory = schedules[name]
            if factory is None:
                factors += [constant] * len(child.param_groups)
                continue
            schedule = factory(child, num_training_steps=num_training_steps)
            if not isinstance(schedule, LambdaLR):
                raise LMTrainError(
                    f"model.optimizer.{name}.scheduler builds a {type(schedule).__name__}: a "
                    "part's schedule must be a LambdaLR (transformers' get_*_schedule_with_warmup)"
                )
            factors += schedule.lr_lambdas
        return scheduled(optimizer, LambdaLR(optimizer, factors))

    def schedule(
        self, name: str, shared: Callable[..., LRScheduler] | None
    ) -> Callable[..., LRScheduler] | None:
        """Part `name`'s schedule: its own, the model's, or the model's with keys changed."""
        own = self.parts[name].get("scheduler")
        if own is None or callable(own):
            return own if own is not None else shared
        if shared is None:  # keys (a Mapping: the constructor refuses anything else)
            raise LMTrainError(
                f"model.optimizer.{name}.scheduler={own!r} changes keys of model.scheduler, which "
                "is null: give the part a scheduler partial of its own (with _target_)"
            )
        return functools.partial(shared, **own)


def is_sharded(param: torch.Tensor) -> bool:
    """Whether `param` is a DTensor (trainer=fsdp shards every parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(param, DTensor)


def constant(step: int) -> float:
    """The factor of a part without a schedule: its learning rate as configured."""
    return 1.0
