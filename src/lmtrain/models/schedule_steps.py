"""The number of optimizer steps a `CausalLMModule`'s learning-rate schedule spans, and the
warnings of a schedule that does not fit them.

The schedule spans the Trainer's `estimated_stepping_batches`. From Python, a Trainer with no
step and no epoch limit (`max_steps=-1, max_epochs=-1`, say with `max_time`) gives infinity, and
`int()` of it was an `OverflowError` traceback (red team api23); the command line refuses that
config before any work (`lmtrain.utils.trainer_checks.check_run_length`). The warm-up and WSD
warnings the command line gives before any work (`warn_long_warmup`) were never given from
Python, where there is no run config: they are read from the module's partials there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from lmtrain.errors import LMTrainError
from lmtrain.models.optimizers import OptimizerParts
from lmtrain.utils.schedule_fit import python_schedules
from lmtrain.utils.trainer_checks import warn_warmup_not_shorter_than

if TYPE_CHECKING:
    from lmtrain.models.module import CausalLMModule


def schedule_steps(module: CausalLMModule) -> int:
    """The optimizer steps of the module's fit, which its schedule spans; one line when the
    Trainer sets no end (infinity)."""
    steps = module.trainer.estimated_stepping_batches
    if math.isinf(steps):
        trainer = module.trainer
        raise LMTrainError(
            f"Trainer(max_steps={trainer.max_steps}, max_epochs={trainer.max_epochs}) sets no "
            "end for the learning-rate schedule (the module's scheduler=) to span, which is "
            "sized in optimizer steps: pass Trainer(max_steps=<steps>) or "
            "Trainer(max_epochs=<epochs>) (max_time may still end the run first), or "
            "scheduler=None (a constant learning rate)"
        )
    return int(steps)


def warn_schedule_misfits(module: CausalLMModule, steps: int) -> None:
    """Warn of a warm-up not shorter than the run's `steps`, or a WSD schedule whose phases do
    not fit them. The command line's config check compared them with trainer.max_steps already:
    here only when the epochs end the run first (max_steps=-1, or more than the epochs hold).
    From Python (no run config), always, read from the partials the module was given."""
    trainer = module.trainer
    epochs_end = trainer.max_steps == -1 or steps < trainer.max_steps
    if module.run_config is not None:
        if epochs_end:
            length = f"the run's {steps} steps (trainer.max_epochs={trainer.max_epochs})"
            warn_warmup_not_shorter_than(steps, length, module.run_config.get("model") or {})
        return
    if epochs_end:
        length = f"the run's {steps} steps (Trainer(max_epochs={trainer.max_epochs}))"
    else:
        length = f"the run's {steps} steps (Trainer(max_steps={trainer.max_steps}))"
    factory = module.optimizer_factory
    parts = factory.parts if isinstance(factory, OptimizerParts) else None
    model = python_schedules(module.scheduler_factory, parts)
    warn_warmup_not_shorter_than(steps, length, model, prefix="")
