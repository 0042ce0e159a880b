"""`trainer.limit_train_batches` in whole optimizer steps, once the data are known.

Lightning steps at an epoch's last micro-batch whatever the accumulation, so a limit that is no
multiple of `trainer.accumulate_grad_batches` (which `global_batch_size` sets) ended each epoch
in a part of a step: the windows of one micro-batch, each loss still divided by the
accumulation, counted whole in `tokens_seen`. lmtrain's own epochs are whole steps
(`lmtrain.data.train_epochs`); a limit is the user's number, so it is refused rather than
changed. The debug modes that set the limit (`fast_dev_run`, `overfit_batches`) are left alone:
they check that a step runs, not what it trains.
"""

from __future__ import annotations

from lightning import LightningDataModule, Trainer

from lmtrain.errors import LMTrainError
from lmtrain.utils.validation_interval import epoch_batches


def check_limit_in_whole_steps(trainer: Trainer, datamodule: LightningDataModule) -> None:
    """Raise LMTrainError when `trainer.limit_train_batches` cuts each epoch of `datamodule`
    inside an optimizer step."""
    limit, accumulate = trainer.limit_train_batches, trainer.accumulate_grad_batches
    if accumulate == 1 or trainer.fast_dev_run or trainer.overfit_batches:
        return
    if isinstance(limit, float) and limit == 1.0:
        return
    batches = epoch_batches(trainer, datamodule)
    if not batches or batches % accumulate == 0:  # None: a data module not ours; 0: refused
        return
    whole = max(accumulate, batches // accumulate * accumulate)
    raise LMTrainError(
        f"trainer.limit_train_batches={limit} ends each epoch after {batches} batches, inside "
        f"an optimizer step of trainer.accumulate_grad_batches={accumulate} batches: pass "
        f"trainer.limit_train_batches={whole} (a multiple of {accumulate})"
    )
