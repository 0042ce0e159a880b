"""`trainer.val_check_interval` against the length of an epoch, once the data are known.

With `trainer.check_val_every_n_epoch` set, Lightning counts the interval's batches within each
epoch, so an interval longer than an epoch never comes round: Lightning refuses it with a
ValueError when the fit loop first reads the train loader, a traceback after the data were
prepared and the loggers had written their first files (csv/hparams.yaml). The config checks
cannot see it (the epoch's length is the corpus's), so train() asks here once the data module
and the trainer are built, before the loggers write anything. Lightning's own refusal, where a
data module of one's own is not measured here, is one line too (`lightning_interval_refusal`).
"""

from __future__ import annotations

import re

from lightning import LightningDataModule, Trainer

from lmtrain.errors import LMTrainError, find_cause

# Lightning's words (lightning.pytorch.loops.fit_loop.FitLoop.setup_data).
LIGHTNING_REFUSAL = re.compile(
    r"`val_check_interval` \((?P<interval>\d+)\) must be less than or equal to the number of "
    r"the training batches \((?P<batches>\d+)\)"
)


def check_val_interval_fits_epoch(trainer: Trainer, datamodule: LightningDataModule) -> None:
    """Raise LMTrainError when `trainer` validates every `val_check_interval` batches of an
    epoch (check_val_every_n_epoch set) and the epoch of `datamodule` is shorter than that."""
    interval = getattr(trainer, "val_check_interval", None)  # unset for a time span
    every = trainer.check_val_every_n_epoch
    if not isinstance(interval, int) or isinstance(interval, bool) or every is None:
        return  # a share of an epoch, or batches counted across epochs
    if trainer.limit_val_batches == 0:  # no validation: Lightning does not mind either
        return
    batches = epoch_batches(trainer, datamodule)
    if batches and interval > batches:  # 0: Lightning refuses the limit itself
        limit = trainer.limit_train_batches
        whole = isinstance(limit, float) and limit == 1.0
        limited = "" if whole else f", trainer.limit_train_batches={limit}"
        raise LMTrainError(longer_than_an_epoch(interval, batches, every, limited))


def epoch_batches(trainer: Trainer, datamodule: LightningDataModule) -> int | None:
    """The batches each rank trains per epoch of `datamodule`, after `limit_train_batches`
    (as Lightning counts them); None for a data module whose train loader is not ours."""
    # Here, not at the top: lmtrain.utils.task imports this module in every entry point, and
    # generate and export read no corpus.
    from lmtrain.data.datamodule import TextDataModule
    from lmtrain.data.train_epochs import whole_steps

    if type(datamodule).train_dataloader is not TextDataModule.train_dataloader:
        return None
    assert isinstance(datamodule, TextDataModule)
    # Not attached to the trainer yet: the loader of one process. Each of n ranks trains as many
    # batches as one process with n times the batch would (TextDataModule.train_dataloader),
    # floor(floor(windows / batch) / n) = floor(windows / (batch * n)), in whole optimizer
    # steps (`lmtrain.data.train_epochs`), at least one.
    one_process = len(datamodule.train_dataloader())
    per_rank = whole_steps(one_process // (trainer.num_devices * trainer.num_nodes), trainer)
    limit = trainer.limit_train_batches  # overfit_batches and fast_dev_run set it too
    if isinstance(limit, int):
        return min(per_rank, limit)
    return int(per_rank * limit)


def longer_than_an_epoch(interval: int, batches: int, every: int | None, limited: str = "") -> str:
    """The refusal of an interval of `interval` batches in an epoch of `batches`; `every`: the
    trainer's check_val_every_n_epoch (None: not known here); `limited` follows the count."""
    every_text = " set" if every is None else f"={every}"
    return (
        f"trainer.val_check_interval={interval} batches is longer than an epoch ({batches} "
        f"batches{limited}) with trainer.check_val_every_n_epoch{every_text}: pass at most "
        f"{batches}, or trainer.check_val_every_n_epoch=null"
    )


def lightning_interval_refusal(err: BaseException) -> LMTrainError | None:
    """Lightning's ValueError for an interval longer than an epoch, as one line."""
    refusal = find_cause(err, ValueError)
    match = LIGHTNING_REFUSAL.search(str(refusal)) if refusal is not None else None
    if match is None:
        return None
    interval, batches = int(match["interval"]), int(match["batches"])
    return LMTrainError(longer_than_an_epoch(interval, batches, None))
