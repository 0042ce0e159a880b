"""A resumed run trains with its own config's optimizer settings, not the checkpoint's.

Lightning restores the optimizer's state_dict, parameter groups included, and the scheduler's,
base rates included. So `resume=<run> model.optimizer.lr=1e-4` (or `ckpt_path=last` with a new
weight decay) would train on with the interrupted run's values, while the run's
`.hydra/config.yaml` records the new ones; and the NaN guard's advice (lower the learning rate,
then resume) would do nothing. HF's Trainer behaves the same; nanoGPT, which computes its rate
from its config at every step, does not. Here the groups' settings as the config built them are
remembered before the restore and put back over the restored ones: the optimizer's moments and
the schedule's step count stay the checkpoint's, the base rates and every other group setting
become the config's. Where the rate of the next step moves (a new `lr`, or a schedule rebuilt
for another `trainer.max_steps`), one warning says from what to what. Nothing changes when the
config is the checkpoint's, so an exact resume stays exact. The step's rate is recomputed for
a LambdaLR (transformers' schedules: every one lmtrain configures); another scheduler gets the
new base rates, which it uses as its own formula does.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch import Trainer
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)

Groups = list[dict[str, Any]]


def configured_groups(optimizers_config: dict[str, Any]) -> Groups:
    """The settings of each parameter group as `configure_optimizers` built them (no params).

    A schedule has already moved `lr` (to its first step's); `initial_lr` is the base rate."""
    return [
        {k: v for k, v in group.items() if k != "params"}
        for group in optimizers_config["optimizer"].param_groups
    ]


def apply_configured(trainer: Trainer, configured: Groups) -> None:
    """After Lightning restored a checkpoint: put this run's configured group settings back."""
    if not configured or not trainer.optimizers or trainer.should_stop:
        return  # `should_stop`: a run EarlyStopping had ended (EndedRun) trains nothing more
    groups = trainer.optimizers[0].param_groups
    if len(groups) != len(configured):  # a checkpoint of another model would have failed first
        return
    scheduler = trainer.lr_scheduler_configs[0].scheduler if trainer.lr_scheduler_configs else None
    changes = []
    if isinstance(scheduler, LambdaLR) and scheduler.last_epoch != trainer.global_step:
        # A schedule the checkpoint did not have (model.scheduler=null, saved before such runs
        # got a constant one): it starts at the run's step, as it stands there, not at its own
        # step 0 (a second warm-up).
        changes.append(f"the schedule's step {scheduler.last_epoch} -> {trainer.global_step}")
        scheduler.last_epoch = trainer.global_step
    for i, (group, wanted) in enumerate(zip(groups, configured, strict=True)):
        changed = []
        for key, value in wanted.items():
            if key == "lr" and scheduler is not None:
                continue  # the schedule's rate of the step: set below, from the base rate
            if key in group and not same(group[key], value):
                label = "lr" if key == "initial_lr" else key  # a schedule's base rate
                changed.append(f"{label} {short(group[key])} -> {short(value)}")
                group[key] = value
        if scheduler is not None and "initial_lr" in wanted:
            scheduler.base_lrs[i] = wanted["initial_lr"]
        if isinstance(scheduler, LambdaLR) and "initial_lr" in wanted:  # transformers' kind
            rate = wanted["initial_lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)
            if not same(group["lr"], rate):
                changed.append(f"this step's rate {short(group['lr'])} -> {short(rate)}")
                group["lr"] = rate
        if changed:
            changes.append(f"{group.get('name', f'group {i}')}: {', '.join(changed)}")
    if changes and trainer.is_global_zero:
        log.warning(
            "Resumed at step %d with optimizer or schedule settings other than the "
            "checkpoint's (the schedule is sized to trainer.max_steps); this run's config "
            "applies: %s",
            trainer.global_step,
            "; ".join(changes),
        )


def same(a: Any, b: Any) -> bool:
    """Equal values; a list and a tuple of the same items are (a one-file checkpoint's betas
    come back as a list, an FSDP run's optimizer holds a tuple)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def short(value: Any) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)
