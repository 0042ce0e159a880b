"""What `training_step` logs of each optimizer step and checkpoints carry on: `train/loss`, the
step's mean over micro-batches and ranks (`StepLoss`), and the tokens read (`tokens_seen`).

Lightning keeps the last value a training step logs (`on_step`: no mean over a gradient
accumulation window), and under DDP each rank logs its own. Logged as it comes, `train/loss`
would be the loss of one micro-batch of one rank: noisier than the step's, and different between
runs that differ only in `data.batch_size` or the number of devices, though their gradients are
the same. So the module adds each micro-batch's loss to a `StepLoss` (a detached add on the
device, no host sync), which logs the mean once, at the micro-batch that steps, on the steps the
loggers write, with `sync_dist` (one all-reduce of a scalar, on those steps only: the mean over
ranks).

The micro-batches of one step hold the same number of tokens: training batches are full
(`drop_last`) windows of one length, and a sequence-length warm-up cuts all of a step's windows
to the same length (it depends on the step only). So the mean of the micro-batch means, and then
of the ranks' means, is the step's mean over its tokens. A micro-batch the NaN guard skipped
(`nan_guard=skip`, on every rank together) counts for nothing; the last step of an epoch, which
Lightning takes with the micro-batches it has, is the mean of those. A step whose every
micro-batch was skipped trained on no loss, and logs NaN, not nothing: Lightning's
`callback_metrics` keep the last value logged, so an older step's loss stood in metrics.json
(and the progress bar) as the last step's; and a NaN in the step's row says that its loss was
not finite, where a missing key reads as a step not logged.

Every rank decides alike whether to log, so the all-reduce always pairs: the same micro-batches,
skipped together, the same `log_every_n_steps` and `max_steps`, and a `should_stop` that
Lightning's EarlyStopping and Timer agree over the ranks.

The sum is per step: it starts again when `global_step` moves on, so a resume at a step boundary
starts empty. A checkpoint written between the micro-batches of a step (ExactResume saves their
gradients too) holds the sum so far, averaged over the ranks, so the resumed step logs the mean an
uninterrupted one does.
"""

from __future__ import annotations

from typing import Any

import torch

from lmtrain.lightning_compat import accumulating
from lmtrain.models.seq_len_warmup import tokens_per_window


class StepLoss:
    """The sum and count of the losses of the optimizer step in progress (`step`)."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.total: torch.Tensor | float = 0.0
        self.count = 0

    def update(self, module: Any, loss: torch.Tensor, skip: bool) -> None:
        """Add this micro-batch's `loss` of `module` (a CausalLMModule) unless skipped, and log
        the step's mean as `train/loss` at the micro-batch that steps (Lightning's own rule, which
        also steps at an epoch's last batch: `lightning_compat.accumulating`), if the loggers
        write after that step."""
        step = module.global_step
        if step != self.step:
            self.step, self.total, self.count = step, 0.0, 0
        if not skip:  # the first micro-batch's loss as it is: no add without accumulation
            self.total = self.total + loss.detach() if self.count else loss.detach()
            self.count += 1
        if not module.logs_this_step or accumulating(module.trainer):
            return
        # A tensor, not a float: Lightning syncs it to the host only when it logs. No-op with
        # one process (Lightning syncs only when distributed).
        mean = self.total / self.count if self.count else torch.full_like(loss, float("nan"))
        module.log("train/loss", mean, prog_bar=True, sync_dist=True)

    def state_dict(self, trainer: Any) -> dict[str, Any]:
        """For a checkpoint: the sum so far when it falls between the micro-batches of a step
        (averaged over the ranks: every rank saves, rank 0 writes); empty at a step boundary."""
        if trainer is None or not self.count or self.step != trainer.global_step:
            return {}
        total = torch.as_tensor(self.total, device=trainer.strategy.root_device).clone()
        if trainer.world_size > 1:  # the reduce is in place: on a copy
            total = trainer.strategy.reduce(total, reduce_op="mean")
        return {"step": self.step, "total": float(total), "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A resumed run goes on with the step's sum so far (none at a step boundary)."""
        self.step = state.get("step")
        self.total, self.count = float(state.get("total", 0.0)), int(state.get("count", 0))


def tokens_seen(module: Any, windows: int, full: int) -> tuple[float, int]:
    """(tokens read by the end of the step in progress, the steps they count) of `module` (a
    CausalLMModule) training on micro-batches of `windows` windows of `full` + 1 tokens.

    Derived, not counted (windows have a fixed shape, or the warm-up's length), and after a
    resume counted on from the checkpoint's total (`module.tokens_before`): that run may have
    read another data.batch_size.
    """
    trainer, warmup = module.trainer, module.seq_len_warmup
    per_step = windows * trainer.accumulate_grad_batches * trainer.world_size
    steps = module.global_step + 1
    tokens = per_step * tokens_per_window(warmup, steps, full)
    if module.tokens_before is not None:
        before, steps_before = module.tokens_before
        tokens += before - per_step * tokens_per_window(warmup, steps_before, full)
    return float(tokens), steps
