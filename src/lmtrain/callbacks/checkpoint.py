"""`StepScheduledCheckpoint`: Lightning's ModelCheckpoint, with the best checkpoint chosen after
each validation only, and `every_n_train_steps` a schedule for last.ckpt alone.

Given `every_n_train_steps`, Lightning 2.6 ranks top-k at the step saves, by whatever `val/loss`
holds then: at a step that a validation follows, the previous validation's value. The best
checkpoint then got newer weights under an older loss, and the validation at that step was never
ranked (Lightning skips the save after it, the step being saved already). The step save also
comes before that validation, so a run killed during it resumed past it (Lightning fast-forwards
a validation due at the batch a checkpoint was written after): its val row, text samples and
EarlyStopping and best-checkpoint decisions were lost.

So this subclass gives Lightning no step schedule, and ranks top-k right after each validation,
on that validation's metric and the weights it saw: Lightning's public
`save_on_train_epoch_end=False`. Lightning's default ranks an epoch-end validation (every epoch,
`val_check_interval=1.0`) later, in `on_train_epoch_end`, after last.ckpt was written for that
validation: a run killed in between (kill -9) resumed past a validation never ranked, and one
preempted at the epoch's last step ran the validation on resume but never reached that hook;
either way the best checkpoint was lost. Now the best checkpoint is on disk before last.ckpt.

`every_n_train_steps` writes last.ckpt, through the public `trainer.save_checkpoint`, every N
optimizer steps from the start (Lightning would wait for the first val/loss), except at a step
that a validation follows: last.ckpt is written after that validation instead, so a kill during
it resumes from the save before and validates again. After every validation, and at the end of
training, last.ckpt holds the latest state (Lightning 2.6 writes it there only when top-k saved,
or, at the end, when it saved nothing before). A run resumed with another `every_n_train_steps`
keeps its top-k state.

A scheduled last.ckpt is not written in the step's `on_train_batch_end`: Lightning sends the
step's metrics to the loggers only after every hook of the batch has returned, so a kill between
a save there and that send lost the step's row for good (the resume starts at the next step). It
is written at the next hook after the send, the next training batch's start or the epoch's end,
holding the loop's counters as they were in that `on_train_batch_end`
(`saving_as_at_step_end`): the run resumes as from a save there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, StochasticWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lmtrain.callbacks.checkpoint_state import (
    beyond_top_k,
    foreign_paths,
    missing_paths,
    moved_to,
    name_pattern,
    ranked_paths,
    same_ranking,
    without_paths,
)
from lmtrain.callbacks.untracked_best import warn_untracked
from lmtrain.errors import epoch_end_ranking
from lmtrain.lightning_compat import (
    ContainedCheckpoint,
    saving_as_at_step_end,
    step_end_counters,
    validation_follows,
)
from lmtrain.models.last_fallback import LastFallback
from lmtrain.models.nan_guard import proven_weights
from lmtrain.utils.io import remove_killed_writes

log = logging.getLogger(__name__)


class StepScheduledCheckpoint(ContainedCheckpoint):
    """ModelCheckpoint whose top-k is decided after validations only, and whose
    `every_n_train_steps` writes last.ckpt (never top-k), before the first validation too."""

    def __init__(
        self,
        *args: Any,
        every_n_train_steps: int | None = None,
        save_on_train_epoch_end: bool | None = False,
        **kwargs: Any,
    ) -> None:
        if save_on_train_epoch_end:
            raise epoch_end_ranking("callbacks.model_checkpoint")
        # No step schedule, and top-k right after each validation (also at an epoch's end).
        super().__init__(*args, save_on_train_epoch_end=False, **kwargs)
        # The key this callback's state had when Lightning ran the step schedule: the one
        # ModelCheckpoint with these settings has, so checkpoints written by an earlier version
        # of this class, or by Lightning's own, restore into this one. Building it also checks
        # every_n_train_steps (>= 0, not with every_n_epochs) as Lightning does.
        triggers = {k: kwargs[k] for k in ("every_n_epochs", "train_time_interval") if k in kwargs}
        self._state_key = ModelCheckpoint(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=every_n_train_steps,
            **triggers,
        ).state_key
        self.last_every_n_steps = every_n_train_steps or 0
        self._last_written_step: int | None = None  # the step last.ckpt holds (here or Lightning's)
        self._last_on_disk = False  # at that step: written in this process, or resumed from
        # A scheduled last.ckpt to write at the next hook: the loop's counters at the step's end.
        self._due: dict[str, Any] | None = None
        self._saves = 0  # checkpoints (of any name) saved with their callback state, counted
        self._missing: list[str] | None = None  # rank 0's missing best checkpoints, to forget
        # Under model.nan_guard: the last.ckpt a NaN-guard stop goes back to, and the step
        # whose weights the training batch in progress reads.
        self._fallback, self._weights_step = LastFallback(), 0
        self._beyond: list[str] = []  # best files past a lower save_top_k on resume, to remove

    @property
    def state_key(self) -> str:
        return self._state_key

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Also removes what writes of this callback's files left when a kill stopped them
        (`.best-...ckpt.tmp-<pid>`): a best checkpoint's name holds its step, so no later write
        of that name would ever sweep it (atomic_write sweeps its own target's). Rank 0 writes
        them all, and a live process's write in progress is left alone."""
        super().setup(trainer, pl_module, stage)
        dirpath = str(self.dirpath or "")
        folder = Path(dirpath.removeprefix("file://"))
        local = bool(dirpath) and get_protocol(dirpath) == "file" and folder.is_dir()
        if stage == "fit" and trainer.is_global_zero and local:
            for removed in remove_killed_writes(folder, name_pattern(self)):
                log.info("Removed %s, left by a checkpoint write that was killed", removed)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run starts on the step its checkpoint holds: no need to write it again.
        self._last_written_step = trainer.global_step
        self._last_on_disk = self._resumed_from_last(trainer)
        # Last among the callbacks (Lightning orders checkpoints so): after the resume checks;
        # not in a run that had ended (EndedRun stops it: it trains nothing, applies nothing).
        for path in [] if trainer.should_stop else self._beyond:
            log.info("Removing %s: past save_top_k=%d of this resumed run", path, self.save_top_k)
            trainer.strategy.remove_checkpoint(path)  # rank 0 only
        self._beyond = []

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saves += 1
        if getattr(pl_module, "nan_guard", "off") != "off":
            self._fallback.before_save(trainer)

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Before Lightning loads callback states by key: a run resumed with another
        `every_n_train_steps` (part of the key) finds its state under the old key (else a worse
        best was kept beside the forgotten ones, as `best_model_path` and the W&B artifact).
        Another monitor or mode ranks afresh: the old best files stay, named in one warning."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key not in states:
            same = [k for k in states if same_ranking(k, self.monitor, self.mode)]
            if len(same) == 1:  # two checkpoint callbacks ranking alike: leave it to Lightning
                states[self.state_key] = states[same[0]]
            elif not same and trainer.state.fn == TrainerFn.FITTING:
                warn_untracked(trainer, self, states)
        state = states.get(self.state_key)
        if isinstance(state, dict):
            # Rank 0's file system decides, as Lightning's own checks of existing files do:
            # ranks that ranked different checkpoints would disagree on the next save.
            self._missing = trainer.strategy.broadcast(missing_paths(moved_to(state, self.dirpath)))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder moved (or copied) before its resume keeps its best checkpoints so far.
        Lightning restores them only from the same `dirpath`, and otherwise kept the old path
        as `best_model_path` and ranked the next validation alone: a worse checkpoint became
        the best, beside the real one.

        A checkpoint is untrusted data: paths of its state that are not files this callback
        writes in `dirpath` (`<dirpath>/../../x`, a file elsewhere, another name) are dropped
        with a warning. Lightning removes the kth best and the previous last.ckpt when it
        replaces them, so a crafted last.ckpt made the resumed run delete files anywhere, and
        the W&B artifact callback would upload `best_model_path` whatever it names. Best
        checkpoints no longer on disk (deleted by hand, not copied) are forgotten the same way."""
        state = moved_to(state_dict, self.dirpath)
        dropped = foreign_paths(state, self.dirpath, name_pattern(self))
        if dropped:
            rank_zero_warn(
                f"The {type(self).__name__} state of the checkpoint resumed from names files "
                f"that are not its checkpoints in {self.dirpath}: "
                f"{', '.join(repr(p) for p in dropped)}; they are forgotten (never removed or "
                "uploaded), and the best checkpoint is chosen among the others"
            )
            state = without_paths(state, dropped, self.mode)
        missing = missing_paths(state) if self._missing is None else self._missing
        missing = [path for path in missing if path in ranked_paths(state)]
        self._missing = None
        if missing:
            rank_zero_warn(
                f"The best checkpoints of the checkpoint resumed from are missing from "
                f"{self.dirpath}: {', '.join(repr(p) for p in missing)}; they are forgotten, "
                "and the best checkpoint is chosen among the others"
            )
            state = without_paths(state, missing, self.mode)
        # A lower save_top_k than the run's: Lightning kept every later best (it deletes the
        # kth best only while exactly k are ranked).
        self._beyond = beyond_top_k(state, self.save_top_k, self.mode)
        state = without_paths(state, self._beyond, self.mode)
        super().load_state_dict(state)

    def check_monitor_top_k(self, trainer: Trainer, current: torch.Tensor | None = None) -> bool:
        """A NaN or infinite score ranks nothing: Lightning kept a NaN as the first best
        (`best-step=3-val_loss=nan.ckpt`, ranked as inf), weights that give NaN."""
        if current is not None and not torch.isfinite(current).all():
            return False
        return super().check_monitor_top_k(trainer, current)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self._fallback.proven(trainer, proven_weights(pl_module, self._weights_step))
        # The same decision on every rank, as save_checkpoint (a collective under DDP and
        # FSDP) needs: a step count, and the loop's own counters for the validation.
        self._due = step_end_counters(trainer) if self._last_due(trainer) else None

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """The scheduled last.ckpt of the step before, in the same epoch, now that Lightning has
        logged it; unless a validation came in between and wrote last.ckpt after it."""
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        self._write_due(trainer)
        self._weights_step = trainer.global_step

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The scheduled last.ckpt of the epoch's (or the run's) last step, unless Lightning
        saved here, or a validation after that step wrote it."""
        saves = self._saves
        super().on_train_epoch_end(trainer, pl_module)
        if self._saves != saves:
            self._due = None
        self._write_due(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        saves = self._saves
        super().on_validation_end(trainer, pl_module)  # top-k, and last.ckpt if top-k saved
        fitting = trainer.state.fn == TrainerFn.FITTING
        if not self.save_last or not fitting or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if self._saves == saves:  # Lightning saved nothing (or weights only): last.ckpt here
            self._write_last(trainer)
        self._last_written_step, self._last_on_disk = trainer.global_step, True

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """last.ckpt holds the end of training, written once.

        Lightning 2.6 writes it here whenever it saved nothing in this process, also when
        last.ckpt holds this step already: written after the last validation by this callback,
        or the checkpoint of a resumed run that trained nothing more (EarlyStopping had ended
        it). That rewrite changed a finished run's last.ckpt on every resume (its training time,
        its final val loss gone) and, after the epoch's end, its loop counters."""
        self._due = None  # the epoch's end, which comes first, wrote any due save
        if trainer.fast_dev_run:  # Lightning 2.6 would still write last.ckpt here
            return
        # Lightning's StochasticWeightAveraging puts its average into the model in its own
        # on_train_end, which runs before this one (Lightning calls checkpoint callbacks last):
        # last.ckpt must hold the weights the final validation and the export see.
        swapped = any(isinstance(c, StochasticWeightAveraging) for c in trainer.callbacks)
        current = self._last_on_disk and trainer.global_step == self._last_written_step
        if current and not swapped:
            return
        saves = self._saves
        super().on_train_end(trainer, pl_module)  # last.ckpt, only if Lightning saved none yet
        # Otherwise Lightning's latest last.ckpt may be steps before the end: write the end.
        final = self._saves == saves and (trainer.global_step != self._last_written_step or swapped)
        if final and self.save_last:
            self._write_last(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """After the end's saves: no NaN can follow, so the NaN guard's fallback goes."""
        self._fallback.forget(trainer)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exc: BaseException
    ) -> None:
        """A run that ends on an error keeps no hidden copy (a NaN stop has put it back)."""
        self._fallback.forget(trainer)

    def _last_due(self, trainer: Trainer) -> bool:
        """A scheduled step not written yet, that no validation follows (the save after that
        validation writes last.ckpt)."""
        every = self.last_every_n_steps
        return bool(
            self.save_last
            and every >= 1
            and trainer.global_step % every == 0
            and trainer.global_step != self._last_written_step
            and not (trainer.fast_dev_run or trainer.sanity_checking)
            and not validation_follows(trainer)
        )

    def _write_due(self, trainer: Trainer) -> None:
        """The scheduled last.ckpt, if one is due, as of its step's end."""
        due, self._due = self._due, None
        if due is not None and trainer.global_step != self._last_written_step:
            with saving_as_at_step_end(trainer, due):
                self._write_last(trainer)

    def _write_last(self, trainer: Trainer) -> None:
        # The path as Lightning spells it: its next save of last.ckpt removes the previous one
        # when the two names differ.
        path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        self.last_model_path = path  # part of the state saved, as in Lightning's own saves
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_written_step, self._last_on_disk = trainer.global_step, True

    def _resumed_from_last(self, trainer: Trainer) -> bool:
        """Whether the checkpoint this fit resumed from is this callback's last.ckpt."""
        resumed = trainer.ckpt_path
        if not resumed or not self.save_last:
            return False
        last = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        return os.path.realpath(str(resumed)) == os.path.realpath(last)
