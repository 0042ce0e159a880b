"""The functions of lmtrain.lightning_compat.epochs, and the change to
`lightning_compat.mark_validation_pending`, on Lightning alone (tests/test_epoch_resume18.py runs
the lmtrain runs whose resumes they mend).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from lmtrain import lightning_compat as compat


class Rows(L.pytorch.loggers.Logger):
    """A logger that keeps what Lightning sends it: (step, epoch, metric names)."""

    name, version = "rows", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, float | None, list[str]]] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.rows.append((step, metrics.get("epoch"), sorted(metrics)))

    def log_hyperparams(self, *args: object, **kwargs: object) -> None:
        pass


class LoggingModel(BoringModel):
    def training_step(self, batch: object, batch_idx: int) -> dict:
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"])
        return out

    def validation_step(self, batch: object, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch))


class Compat(L.Callback):
    """Calls the functions under test where ExactResume does (`count_cut_epoch_as_running`
    in every save; `start_epoch_after_restart_at_epoch_end` as training starts), marks saves
    before a validation as preemption does, saves `path` and stops after step `stop_at`
    (before the validation that may follow it), and saves `path` at the end of training."""

    def __init__(self, path: Path, stop_at: int | None = None, use: bool = True) -> None:
        self.path, self.stop_at, self.use, self.pending = path, stop_at, use, False

    def on_train_start(self, trainer: L.Trainer, *args: object) -> None:
        if self.use:
            from lmtrain.lightning_compat.epochs import start_epoch_after_restart_at_epoch_end

            start_epoch_after_restart_at_epoch_end(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.stop_at:
            self.pending = compat.validation_follows(trainer)
            trainer.save_checkpoint(self.path)
            compat.log_finished_train_step(trainer)
            raise RuntimeError("stopped")

    def on_train_end(self, trainer: L.Trainer, *args: object) -> None:
        trainer.save_checkpoint(self.path)

    def on_save_checkpoint(self, trainer: L.Trainer, module: object, checkpoint: dict) -> None:
        if self.pending and self.use:
            compat.mark_validation_pending(checkpoint)
        if self.use:
            from lmtrain.lightning_compat.epochs import count_cut_epoch_as_running

            count_cut_epoch_as_running(trainer, checkpoint)


def trainer(logger: Rows | None = None, callbacks: list | None = None, **limits: object):
    """Epochs of 5 steps, a validation of one batch at each epoch's end, every step logged."""
    settings = {"max_steps": -1, "max_epochs": 3, "limit_train_batches": 5, **limits}
    settings.setdefault("limit_val_batches", 1)
    return L.Trainer(
        accelerator="cpu",
        log_every_n_steps=1,
        logger=logger or False,
        callbacks=callbacks or [],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


def epoch_counts(path: Path) -> dict[str, int]:
    loops = torch.load(path, map_location="cpu", weights_only=True)["loops"]["fit_loop"]
    return loops["epoch_progress"]["current"]


@pytest.mark.parametrize("use", [True, False])
def test_count_cut_epoch_as_running_lets_an_extension_train_the_rest_of_the_epoch(
    tmp_path: Path, use: bool
) -> None:
    path = tmp_path / "ended.ckpt"
    trainer(callbacks=[Compat(path, use=use)], max_steps=7, max_epochs=-1).fit(LoggingModel())
    counts = epoch_counts(path)
    # Epoch 1 had 2 of its 5 batches: under way (Lightning's own save: processed).
    assert (counts["started"], counts["processed"]) == ((2, 1) if use else (2, 2))
    extended = trainer()
    extended.fit(LoggingModel(), ckpt_path=path)
    assert extended.global_step == (15 if use else 12)
    # ... and a run ended at an epoch's end is as Lightning saves it.
    trainer(callbacks=[Compat(path, use=use)], max_steps=5, max_epochs=-1).fit(LoggingModel())
    assert (epoch_counts(path)["started"], epoch_counts(path)["processed"]) == (1, 1)
    extended = trainer()
    extended.fit(LoggingModel(), ckpt_path=path)
    assert extended.global_step == 15


@pytest.mark.parametrize("use", [True, False])
def test_start_epoch_after_restart_at_epoch_end_counts_the_next_epoch_started(
    tmp_path: Path, use: bool
) -> None:
    """Stopped after epoch 0's last step (no validation), resumed and stopped after step 7,
    resumed to the end."""
    path, stops = tmp_path / "stopped.ckpt", (5, 7)
    for stop in stops:
        run = trainer(callbacks=[Compat(path, stop_at=stop, use=use)], limit_val_batches=0)
        with pytest.raises(RuntimeError, match="stopped"):
            run.fit(LoggingModel(), ckpt_path=path if stop != stops[0] else None)
    counts = epoch_counts(path)
    assert (counts["ready"], counts["started"], counts["processed"]) == (
        (2, 2, 1) if use else (1, 1, 1)  # Lightning's: epoch 1 held finished in it
    )
    resumed = trainer(callbacks=[Compat(path, use=use)], limit_val_batches=0)
    resumed.fit(LoggingModel(), ckpt_path=path)
    assert resumed.global_step == (15 if use else 17)  # epoch 1 begun again


@pytest.mark.parametrize(("every", "stop"), [(1, 5), (2, 10)])
def test_a_save_marked_validation_pending_at_an_epochs_end_validates_in_that_epoch(
    tmp_path: Path, every: int, stop: int
) -> None:
    """Stopped after an epoch's last step, before its validation, and resumed: the rows (steps,
    epochs, metrics) are the uninterrupted run's, that validation's in its own epoch."""
    path, whole, stopped, resumed = tmp_path / "stopped.ckpt", Rows(), Rows(), Rows()
    schedule = {"check_val_every_n_epoch": every}
    trainer(whole, **schedule).fit(LoggingModel())
    with pytest.raises(RuntimeError, match="stopped"):
        trainer(stopped, [Compat(path, stop_at=stop)], **schedule).fit(LoggingModel())
    run = trainer(resumed, [Compat(tmp_path / "end.ckpt")], **schedule)
    run.fit(LoggingModel(), ckpt_path=path)
    assert stopped.rows + resumed.rows == whole.rows
    assert resumed.rows[0] == (stop - 1, stop // 5 - 1, ["epoch", "val/loss"])
    assert run.global_step == 15
