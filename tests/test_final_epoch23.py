"""The final validation's rows carry the epoch training was in (red team log23, finding 1).

train.py validates the final weights with `trainer.validate` after `trainer.fit`. A fit that
`max_steps` ends inside an epoch leaves Lightning counting that epoch completed, and Lightning's
logger connector adds `trainer.current_epoch` as `epoch` to every row: the final validation was
logged at epoch 1 for a run that stopped inside epoch 0 (its checkpoint says 0), in every logger,
and a run extended from it went back to epoch 0 after that row. A run that ends at an epoch's
end keeps Lightning's count: its final validation comes after that epoch, at the next one.

The corpus holds 45 train windows of 32 tokens: epochs of 5 steps of 8 windows.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers.cli import run_cli, tiny_cli, wandb_records, wandb_summary
from tests.helpers.corpora import SENTENCE_WORDS

RUN = [
    "trainer.max_epochs=-1",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "model.scheduler=null",
    "callbacks.text_samples=null",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 1600 characters, the last 10% val: 1440 train tokens, 45 windows of 32.
    path = tmp_path_factory.mktemp("final_epoch") / "corpus.txt"
    path.write_text(((SENTENCE_WORDS + ".\n") * 15)[:1600])
    return path


def train(tmp_path: Path, data_dir: Path, corpus: Path, run: Path, *overrides: str) -> None:
    cli = tiny_cli(tmp_path, data_dir, *RUN, *overrides, corpus=corpus)
    out = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]


def csv_epochs(run: Path) -> list[tuple[int, int]]:
    """(step, epoch) of each csv/metrics.csv row that has an epoch, in file order."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [(int(r["step"]), int(float(r["epoch"]))) for r in csv.DictReader(f) if r["epoch"]]


def tensorboard_epochs(run: Path) -> list[tuple[int, int]]:
    """(step, epoch) of each `epoch` scalar in the run's TensorBoard event files, in order."""
    found = []
    for path in sorted((run / "tensorboard").glob("events.out.tfevents*")):
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        if "epoch" in events.Tags()["scalars"]:
            found += [(e.step, int(e.value)) for e in events.Scalars("epoch")]
    return found


def checkpoint_epoch(run: Path) -> tuple[int, int]:
    """(global_step, epoch) of the run's last.ckpt."""
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return last["global_step"], last["epoch"]


def of_its_step(epochs: list[tuple[int, int]]) -> bool:
    """Whether each row's epoch is that of its step: a row at step s is logged after s optimizer
    steps (the final validation's at the last step), in epoch s // 5."""
    return all(epoch == step // 5 for step, epoch in epochs)


@pytest.mark.parametrize("ended_at", [7, 5], ids=["mid-epoch", "epoch-end"])
def test_the_final_validation_is_logged_in_the_epoch_training_was_in_in_every_logger(
    tmp_path: Path, data_dir: Path, corpus: Path, ended_at: int
) -> None:
    """Ended in epoch 1 (step 7), or at epoch 0's end (step 5: the epoch is over, as Lightning
    counts it, and its final validation is at epoch 1 as before)."""
    run = tmp_path / "run"
    loggers = "logger=[csv,tensorboard,wandb]"
    train(tmp_path, data_dir, corpus, run, loggers, f"trainer.max_steps={ended_at}")
    if ended_at == 7:  # the checkpoint's epoch: the cut one, under way
        assert checkpoint_epoch(run) == (7, 1)
    history = [r["history"]["item"] for r in wandb_records(run) if r["type"] == "history"]
    wandb_epochs = [(i["trainer/global_step"], i["epoch"]) for i in history if "epoch" in i]
    for epochs in (csv_epochs(run), tensorboard_epochs(run), wandb_epochs):
        assert epochs[-1] == (ended_at, 1)  # the final validation's row
        assert of_its_step(epochs), epochs
    assert wandb_summary(run)["summary"]["epoch"] == 1


def test_an_extended_runs_epochs_never_go_back(
    tmp_path: Path, data_dir: Path, corpus: Path
) -> None:
    """Ended at step 7 (epoch 1), extended to step 12 (epoch 2): every row's epoch, in CSV and
    TensorBoard, is that of its step, the first run's final validation's included."""
    run, loggers = tmp_path / "run", "logger=[csv,tensorboard]"
    train(tmp_path, data_dir, corpus, run, loggers, "trainer.max_steps=7")
    train(tmp_path, data_dir, corpus, run, loggers, "trainer.max_steps=12", "ckpt_path=last")
    assert checkpoint_epoch(run) == (12, 2)
    for epochs in (csv_epochs(run), tensorboard_epochs(run)):
        assert (7, 1) in epochs and epochs[-1] == (12, 2)
        assert of_its_step(epochs), epochs


class Rows(L.pytorch.loggers.Logger):
    """A logger that keeps the `epoch` of each row Lightning sends it."""

    name, version = "rows", 0

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[float | None] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.epochs.append(metrics.get("epoch"))

    def log_hyperparams(self, *args: object, **kwargs: object) -> None:
        pass


class LoggingModel(BoringModel):
    def validation_step(self, batch: object, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch))


@pytest.mark.parametrize(
    ("max_steps", "lightnings", "ours"), [(7, 2, 1), (5, 1, 1)], ids=["mid-epoch", "epoch-end"]
)
def test_cut_epoch_logged_as_running_on_lightning_alone(
    max_steps: int, lightnings: int, ours: int
) -> None:
    """Epochs of 5 steps. Lightning logs `trainer.validate` after a fit cut in epoch 1 at epoch
    2 (the epochs it counts completed); inside `cut_epoch_logged_as_running` at 1, and the count
    is Lightning's again after it. A fit ended at an epoch's end is left as Lightning counts it."""
    from lmtrain.lightning_compat.epochs import cut_epoch_logged_as_running  # not at HEAD

    rows = Rows()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        max_epochs=-1,
        limit_train_batches=5,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        logger=rows,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = LoggingModel()
    trainer.fit(model)
    trainer.validate(model, verbose=False)
    with cut_epoch_logged_as_running(trainer):
        assert trainer.current_epoch == ours
        trainer.validate(model, verbose=False)
    assert trainer.current_epoch == lightnings
    assert rows.epochs[-2:] == [lightnings, ours]
