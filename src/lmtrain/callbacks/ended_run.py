"""`EndedRun`: a resumed run that had already ended trains, validates and writes nothing more.

Lightning restores EarlyStopping's state (it says the run stopped) but not the stop itself: a
run EarlyStopping had ended, resumed (`resume=latest` picks the newest run, finished or not; a
requeued job that had finished), trained on from its last checkpoint until another validation
stopped it, and replaced its best checkpoint, metrics and samples. A run that ended at
`max_steps` trains nothing when resumed, but lmtrain.train validated it again: a second final
row in the CSV, a second samples block, and metrics.json rewritten with less training time.

So a run whose checkpoint says EarlyStopping stopped it stops at once, and a resumed run that
trained nothing in this process, whose metrics.json already reports the step it is at, ended
there: lmtrain.train keeps that metrics.json and skips the final validation. A run killed in its
final validation has no metrics.json yet, so it still validates.

With overwrite_run=true, the folder's metrics.json is the replaced run's: killed in its final
validation at the step that run had ended at, the new run's resume took it for its own end (and
export put its val loss in the model card; found by a red team). It goes at the new run's first
checkpoint save, when the replaced run's last.ckpt does: a run that fails before then (a sweep
job) leaves the folder's record as it was.

A run preempted at its last step before the validation due there had not ended: its resume runs
that validation (lmtrain.lightning_compat.pending_validation) and then its final one, trains
no step, and writes its `.hydra/` record (a `trainer.max_steps` typed with it included).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)


class EndedRun(Callback):
    """Stops a run that EarlyStopping had ended; tells whether this process trained a step."""

    def __init__(self, replaced_metrics: Path | None = None) -> None:
        self.start_step: int | None = None  # the step training started at (a checkpoint's)
        self.replaced_metrics = replaced_metrics  # removed at the first save (overwrite_run)
        self.validated = False  # a validation of the fit ran in this process

    def on_save_checkpoint(self, trainer: Trainer, *_: object) -> None:
        if self.replaced_metrics is not None and trainer.is_global_zero:
            self.replaced_metrics.unlink(missing_ok=True)
            self.replaced_metrics = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start_step = trainer.global_step
        for callback in trainer.early_stopping_callbacks:
            if callback.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
                trainer.should_stop = True  # every rank restored the same state
                log.info(
                    "EarlyStopping had ended this run at step %d (%s): nothing left to train",
                    trainer.global_step,
                    callback.stopping_reason_message or callback.stopping_reason.name,
                )

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self.validated = True

    def trained_nothing(self, trainer: Trainer) -> bool:
        """No step and no validation of the fit in this process: its loop ended at once (or
        Lightning skipped it, at max_steps). A resume into the validation a preemption at the
        last step left pending ran one: the run had not ended."""
        if self.validated:
            return False
        return self.start_step is None or trainer.global_step == self.start_step


def ended_metrics(output_dir: Path, step: int) -> dict[str, float] | None:
    """The run folder's metrics.json, when it reports `step` (the run ended there), else None.
    A file that is not such a report (hand-edited, another version's) is not one."""
    try:
        metrics = json.loads((output_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or metrics.get("trainer/global_step") != step:
        return None
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def reports_step(output_dir: Path, trainer: Trainer) -> bool:
    """Whether the run folder's metrics.json reports the trainer's step: the run ended whole."""
    return ended_metrics(output_dir, trainer.global_step) is not None
