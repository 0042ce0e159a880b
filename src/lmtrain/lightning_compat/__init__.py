"""Every use of Lightning's private API, in one place (this package; the epoch counters of a
resumed run in `epochs`, what reaches the loggers in `loggers`, the DDP launcher's watch in
`launcher`); tests/test_lightning_compat.py tests each here and in `loggers`.

Lightning is pinned below 2.7 (pyproject.toml) because of these. Each function says what it buys
and whether a public alternative exists; when Lightning changes one of them, its test fails and
this package is the only place to mend. Everything else in lmtrain uses public API only.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar

from lmtrain.lightning_compat.launcher import (  # re-exported: lightning_compat is one namespace
    ddp_launcher_observes as ddp_launcher_observes,
)
from lmtrain.lightning_compat.loggers import (
    log_finished_train_step as log_finished_train_step,
)
from lmtrain.lightning_compat.loggers import (
    write_logs_also_after as write_logs_also_after,
)
from lmtrain.utils.contained_paths import lies_in


def ignore_pytree_deprecation() -> None:
    """Ignore the FutureWarning Lightning 2.6's CombinedLoader (its `utilities._pytree`) raises at
    every fit, validate and test by building torch's LeafSpec, which torch 2.13 deprecates: no
    setting of ours avoids it. Only that warning, raised from that module, is ignored."""
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


ignore_pytree_deprecation()


def accumulating(trainer: Trainer) -> bool:
    """Whether the micro-batch just trained is not followed by an optimizer step.

    Buys: ExactResume saves the gradients accumulated between micro-batches, StepLoss logs a
    step's mean loss where it steps. Public alternative: none that knows Lightning's rule for an
    epoch's last batch (it steps there mid-accumulation unless the strategy accumulates itself).
    """
    return trainer.fit_loop.epoch_loop._should_accumulate()


def cluster_environment(trainer: Trainer) -> Any:
    """The cluster environment Lightning chose (SLURM, torchrun, its own launcher, ...).

    Buys: the preemption callback leaves Lightning's SLURM auto-requeue signal to Lightning.
    Public alternative: `trainer.strategy.cluster_environment`, on parallel strategies only.
    """
    return trainer._accelerator_connector.cluster_environment


class ContainedCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, which removes a checkpoint it replaces only when that file,
    links and `..` resolved, lies inside `dirpath`.

    Buys: a path restored from a checkpoint's callback state (`best_k_models`,
    `last_model_path`), such as `<dirpath>/../../x`, is never removed. Lightning's own test
    compares `Path.absolute()` paths, which keep `..`, so `dirpath` counts among that path's
    parents and a crafted last.ckpt deleted files anywhere (StepScheduledCheckpoint also drops
    such paths when it loads the state). Public alternative: none; the removal decision is this
    method alone. Remote paths (s3://...) are compared as normalized strings.
    """

    def _should_remove_checkpoint(self, trainer: Trainer, previous: str, current: str) -> bool:
        if not super()._should_remove_checkpoint(trainer, previous, current):
            return False
        return self.dirpath is not None and lies_in(str(previous), str(self.dirpath))


def format_consolidated_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A sharded FSDP checkpoint's entries (`model`, `optimizer_0`, ...) in the layout of a
    full Lightning checkpoint (`state_dict`, `optimizer_states`).

    Buys: consolidated files that `trainer.fit(ckpt_path=...)` loads. Public alternative:
    `python -m lightning.pytorch.utilities.consolidate_checkpoint`, whose unpickler is
    unrestricted (see lmtrain.utils.safe_load).
    """
    from lightning.pytorch.utilities.consolidate_checkpoint import _format_checkpoint

    return _format_checkpoint(checkpoint)


def make_every_rank_data_parallel(strategy: Any) -> None:
    """Set a `ModelParallelStrategy`'s data-parallel size to all its ranks (nodes x processes
    per node), before its `setup_environment` builds the device mesh from it.

    Buys: `trainer=fsdp` on any number of devices and nodes, every rank reading its own data.
    Lightning's "auto" is the number of nodes (the rest goes to tensor parallelism). Public
    alternative: `ModelParallelStrategy(data_parallel_size=N)`, but N (devices x nodes) is known
    only once the Trainer has counted the devices, after the strategy is built.
    """
    strategy._data_parallel_size = strategy.num_nodes * strategy.num_processes


class StepsRichProgressBar(RichProgressBar):
    """Lightning's rich progress bar, whose training bar reads `Epoch 0` rather than
    `Epoch 0/-2` when no epoch limit is set (`trainer.max_epochs=-1`, lmtrain's default).

    Buys: no negative epoch count on every run. Public alternative: none; the description comes
    from this private method alone. Its total (a public property) is the micro-batches to
    `max_steps`, so the bar ends full under accumulation and after a resume.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs != -1:
            return super()._get_train_description(current_epoch)
        width = len(self.validation_description)  # Lightning's padding, against flicker
        return f"{f'Epoch {current_epoch}':{width}}"

    @property
    def total_train_batches(self) -> int | float:
        """Public, overridden: when `max_steps` ends the run, the micro-batches the bar will
        have counted by then. Lightning's total is the optimizer steps left, against a count of
        micro-batches since the epoch began: 1200/600 under accumulation of 2, 20/10 after a
        resume at step 10."""
        trainer = self.trainer
        if trainer.max_epochs != -1 or trainer.max_steps is None or trainer.max_steps <= 0:
            return super().total_train_batches
        steps_left = max(trainer.max_steps - trainer.global_step, 0)
        # The rich bar counts the epoch's batch index, which a resumed run restores.
        counted = trainer.fit_loop.epoch_loop.batch_progress.current.ready
        return counted + steps_left * trainer.accumulate_grad_batches


def validation_follows(trainer: Trainer) -> bool:
    """From a callback's `on_train_batch_end`: whether the training loop validates right after
    this training batch.

    Buys: StepScheduledCheckpoint leaves a scheduled last.ckpt at such a batch to the save after
    that validation. One written before it makes a resumed run skip the validation (Lightning
    fast-forwards past a validation due at the batch a checkpoint was written after). This is
    the loop's own test, which `on_advance_end` asks once every `on_train_batch_end` has
    returned; it only reads counters, flags and the clock. It can still turn true afterwards:
    when a later hook of the batch sets `trainer.should_stop`, or when a time-based
    `val_check_interval` runs out in between. Public alternative: none (`val_check_batch` alone
    misses epoch ends, early stops and time-based intervals).
    """
    fetcher = trainer.fit_loop._data_fetcher
    return fetcher is not None and trainer.fit_loop.epoch_loop._should_check_val_fx(fetcher)


def mark_validation_pending(checkpoint: dict[str, Any]) -> None:
    """Make `checkpoint`, saved after a training batch that a validation follows, resume into
    that validation instead of past it.

    Buys: a preemption that stops before a due validation without losing it. From a save after
    a training batch, Lightning resumes past the validation due there; from a save inside a
    validation, it runs it again from its first batch. This sets the validation loop's counters
    as at the start of its first batch (one started, none processed), and the training batch's
    as completed, as a save inside that validation has them: Lightning's restart completes a
    batch left uncompleted (counting its step logged twice) and, at an epoch's last batch,
    ended the epoch before that validation (logged in the next epoch, or skipped by
    `check_val_every_n_epoch`) and never counted the next one started. Public alternative:
    none (the loop decides from these counters alone).
    """
    fit_loop = checkpoint["loops"]["fit_loop"]
    batches = fit_loop["epoch_loop.batch_progress"]
    for counts in (batches["total"], batches["current"]):
        counts["completed"] = counts["processed"]
    progress = fit_loop["epoch_loop.val_loop.batch_progress"]
    total = progress["total"]
    total["ready"] = total["started"] = total["completed"] + 1
    total["processed"] = total["completed"]
    progress["current"].update(ready=1, started=1, processed=0, completed=0)
    progress["is_last_batch"] = False


def step_end_counters(trainer: Trainer) -> dict[str, Any]:
    """The training loop's progress counters as they are now (from a callback's
    `on_train_batch_end`), for `saving_as_at_step_end` to put back in a later save."""
    fit_loop = trainer.fit_loop
    return {
        "batch": fit_loop.epoch_loop.batch_progress.state_dict(),
        "epoch": fit_loop.epoch_progress.state_dict(),
        "stepped": fit_loop.epoch_loop._batches_that_stepped,
    }


def set_logged_steps(trainer: Trainer, steps: int) -> None:
    """Set the count of stepped batches, the `step` Lightning logs every row at.

    Buys: `ResumedRowSteps` puts it where the uninterrupted run has it, whatever Lightning's
    restart made of it (it counts from the validations due under the resumed run's settings).
    Public alternative: none (`trainer.global_step` counts optimizer steps, not rows)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = steps


@contextlib.contextmanager
def saving_as_at_step_end(trainer: Trainer, counters: dict[str, Any]) -> Iterator[None]:
    """While inside, a checkpoint saved at the next training batch's start, or at the epoch's
    end, holds the loop's counters as `counters` (`step_end_counters` from the step's last
    `on_train_batch_end`): the checkpoint a save in that hook would have written.

    Buys: StepScheduledCheckpoint writes its scheduled last.ckpt once Lightning has sent the
    step's metrics to the loggers (after every `on_train_batch_end` hook: a kill between a save
    there and the send lost the step's row), and the run resumes as from a save in that hook.
    In between, Lightning only counts the batch completed and the step logged (at an epoch's
    end, the epoch processed; at the next epoch's first batch it has reset the validation
    loop's counters, so a step that ends an epoch is saved at the epoch's end). Public
    alternative: none (the loop decides from these counters alone). Restored on exit.
    """
    fit_loop = trainer.fit_loop
    batch, epoch = fit_loop.epoch_loop.batch_progress, fit_loop.epoch_progress
    real = step_end_counters(trainer)
    batch.load_state_dict(copy.deepcopy(counters["batch"]))
    epoch.load_state_dict(copy.deepcopy(counters["epoch"]))
    fit_loop.epoch_loop._batches_that_stepped = counters["stepped"]
    try:
        yield
    finally:
        batch.load_state_dict(real["batch"])
        epoch.load_state_dict(real["epoch"])
        fit_loop.epoch_loop._batches_that_stepped = real["stepped"]


def load_train_loader_states(trainer: Trainer) -> None:
    """From `on_train_start`, after a checkpoint's restore: load the train loaders' saved states
    and make the train iterator anew, if Lightning built it before the restore.

    `trainer.estimated_stepping_batches` (a schedule's length, asked in `configure_optimizers`)
    runs `fit_loop.setup_data()` when the fit is bounded by epochs, before the loops' state is
    restored; the restored loader states are then never loaded (`setup_data` does not run
    again), and a DataLoader with workers has already read ahead from the unrestored position.
    No public hook loads them: `fit_loop._combined_loader_states_to_load` (left non-empty only
    then), `_load_combined_loader_states()` and `_data_fetcher` are private.
    """
    fit_loop = trainer.fit_loop
    if not fit_loop._combined_loader_states_to_load or fit_loop._combined_loader is None:
        return
    fit_loop._load_combined_loader_states()
    if fit_loop._data_fetcher is not None:
        iter(fit_loop._data_fetcher)  # persistent workers drop what they read ahead


def resume_only_from_given_checkpoints(trainer: Trainer) -> None:
    """Make `ckpt_path=None` mean the model as it is, for every fit and validate of `trainer`.

    Buys: under SLURM, Lightning reads None as the run folder's newest `hpc_ckpt_*.ckpt`, even
    over a newer last.ckpt and for the validation after training (stale weights); lmtrain picks
    the save itself (`utils.requeue.resume_after_requeue`). Public alternative: none.
    """
    connector = trainer._checkpoint_connector
    parse = connector._parse_ckpt_path

    def parse_given(state_fn: Any, ckpt_path: Any, model_provided: bool, model_connected: bool):
        if ckpt_path is None and model_provided:
            return None
        return parse(state_fn, ckpt_path, model_provided, model_connected)

    connector._parse_ckpt_path = parse_given
