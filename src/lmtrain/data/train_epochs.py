"""The train loader's epoch under a Trainer: the ranks that read, how many windows an epoch
holds, and the window it starts at.

An epoch is whole optimizer steps. Lightning steps at an epoch's last micro-batch whatever the
accumulation (`trainer.accumulate_grad_batches`, which `global_batch_size` sets): an epoch of 41
micro-batches under accumulation of 2 ended in a step of one micro-batch, half the windows
`global_batch_size` promises, with each micro-batch's loss still divided by 2, and `tokens_seen`
counted it whole. So `data.batch_size=8 global_batch_size=16` trained other steps than
`data.batch_size=16` from the first epoch's end on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from lmtrain.data.sampler import ResumableWindowSampler


def data_parallel_rank(trainer: Any) -> tuple[int, int]:
    """(data-parallel size, data-parallel rank): the ranks that read different windows."""
    kwargs = trainer.distributed_sampler_kwargs if trainer is not None else None
    return (kwargs["num_replicas"], kwargs["rank"]) if kwargs else (1, 0)


def epoch_micro_batches(windows_per_epoch: int, global_batch: int, trainer: Any) -> int:
    """The micro-batches each rank trains per epoch of about `windows_per_epoch` windows, read
    `global_batch` (data.batch_size x ranks) per micro-batch: a whole number of `trainer`'s
    optimizer steps (rounded down), and at least one step.

    Every rank has as many (the count depends on the global micro-batch only) and accumulates
    alike, so the ranks' epochs end at the same step; a sequence-length warm-up shortens windows,
    never the count. Outside a Trainer (or before one holds the data module) nothing accumulates.
    """
    return whole_steps(windows_per_epoch // global_batch, trainer)


def whole_steps(batches: int, trainer: Any) -> int:
    """`batches` rounded down to whole optimizer steps of `trainer`, at least one step."""
    accumulate = trainer.accumulate_grad_batches if trainer is not None else 1
    return max(accumulate, batches // accumulate * accumulate)


def trained_windows(
    trainer: Any, global_batch: int, sampler: ResumableWindowSampler
) -> Callable[[], int | None]:
    """The global windows `trainer` has trained on in its run (resumed runs included), while it
    trains from `sampler`; else None, and the sampler counts epochs.

    Lightning's count of processed micro-batches, restored from the checkpoint on resume: it
    counts what reached `training_step`, not what the loader read ahead. The trainer is the one
    that asked for the loader, and the count is its only while it iterates this loader: a
    loader taken from the data module after one fit and handed to another trainer
    (`trainer.fit(module, dm.train_dataloader())`) read the finished fit's count, and so the
    same windows, every epoch.
    """

    def position() -> int | None:
        loaders = trainer.train_dataloader
        if isinstance(loaders, Mapping):
            loaders = list(loaders.values())
        if not isinstance(loaders, list | tuple):
            loaders = [loaders]
        if not any(getattr(loader, "sampler", None) is sampler for loader in loaders):
            return None
        return trainer.fit_loop.epoch_loop.batch_progress.total.processed * global_batch

    return position
