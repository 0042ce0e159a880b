"""lightning_compat.pending_validation on Lightning alone: the fit loop of a Trainer whose step
has reached `max_steps` is entered (FitLoop.skip reads `max_steps`), and a checkpoint saved
inside a validation before its first batch ended reads as one with that validation pending."""

from __future__ import annotations

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from lmtrain.lightning_compat import mark_validation_pending
from lmtrain.lightning_compat.pending_validation import (
    end_fit_at,
    enter_fit_at_max_steps,
    validation_pending,
)


class SaveAtStep(Callback):
    """Keeps the checkpoint dict of the last training batch's end (step `step`)."""

    def __init__(self, step: int) -> None:
        self.step, self.checkpoint = step, None

    def on_train_batch_end(self, trainer: Trainer, *_: object) -> None:
        if trainer.global_step == self.step:
            self.checkpoint = trainer._checkpoint_connector.dump_checkpoint()


def test_a_marked_save_reads_pending_and_an_unmarked_one_not(tmp_path) -> None:
    save = SaveAtStep(2)
    trainer = Trainer(
        default_root_dir=tmp_path,
        max_steps=2,
        val_check_interval=2,
        callbacks=[save],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(BoringModel())
    assert save.checkpoint is not None and not validation_pending(save.checkpoint)
    mark_validation_pending(save.checkpoint)
    assert validation_pending(save.checkpoint)
    assert not validation_pending({})


def test_the_fit_loop_is_entered_at_max_steps_and_ends_there(tmp_path) -> None:
    trainer = Trainer(default_root_dir=tmp_path, max_steps=4, logger=False)
    assert enter_fit_at_max_steps(trainer, 3) is None and trainer.max_steps == 4
    assert enter_fit_at_max_steps(trainer, 4) == 4
    assert trainer.max_steps == 5 == trainer.fit_loop.max_steps  # what FitLoop.skip reads
    end_fit_at(trainer, 4)
    assert trainer.max_steps == 4
    assert enter_fit_at_max_steps(Trainer(max_steps=-1, logger=False), 7) is None
