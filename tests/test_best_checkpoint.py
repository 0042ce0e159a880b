"""The best checkpoint is chosen right after each validation, by that validation's val/loss, and
holds the weights it validated; `every_n_train_steps` writes last.ckpt only, and at a step that
a validation follows, after that validation.

Saves and validations coincide here on purpose (a save every 3 optimizer steps, a validation
every 3 steps' worth of micro-batches): there Lightning's own step save once ranked the new
weights by the previous validation's loss, and came before the validation, so a kill during it
resumed past it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from lmtrain.lightning_compat import accumulating
from lmtrain.train import train
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import char_corpus_run
from tests.helpers.faults import write_marker
from tests.helpers.killed_runs import (
    assert_same_run,
    finish,
    kill_at_marker,
    resumable_corpus,
    train_command,
)

# The key under which the ModelCheckpoint state of `callbacks.model_checkpoint` with
# every_n_train_steps=3 has always been stored: checkpoints written before this class stopped
# giving Lightning the step schedule restore their best checkpoint through it.
STATE_KEY = (
    "ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min', 'every_n_train_steps': 3, "
    "'every_n_epochs': 0, 'train_time_interval': None}"
)


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RecordValidations(Callback):
    """Appends to `path` a JSON line per validation during fit: the optimizer step, the
    val/loss, a digest of the weights that validation saw, and then the step and val_loss that
    `<dirpath>/last.ckpt` holds once training goes on (or ends)."""

    def __init__(self, path: str, dirpath: str) -> None:
        self.path, self.last = Path(path), Path(dirpath) / "last.ckpt"
        self.pending: dict[str, Any] | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        loss = float(trainer.callback_metrics["val/loss"])
        self.pending = {"step": trainer.global_step, "loss": loss}
        self.pending["digest"] = weights_digest(pl_module.state_dict())

    def on_train_batch_start(self, *args: Any) -> None:
        self._write()

    def on_train_end(self, *args: Any) -> None:
        self._write()  # after the checkpoint callback's save of the final validation

    def _write(self) -> None:
        if self.pending is None:
            return
        last = torch.load(self.last, map_location="cpu", weights_only=True)
        record, self.pending = self.pending, None
        record["last"] = [last["global_step"], last["lmtrain"]["val_loss"]]
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


@pytest.mark.parametrize("mode", ["min", "max"])
def test_best_checkpoint_is_the_best_validation_with_its_weights(
    compose_cfg, tmp_path: Path, mode: str
) -> None:
    """Accumulation 2, a validation and a save every 3 optimizer steps, 12 steps: the best
    checkpoint's name, score, step and weights are those of the best validation in
    csv/metrics.csv, and last.ckpt holds each validation once it is over. `mode=max`: the
    val/loss falls, so no validation after the first makes the best."""
    records = tmp_path / "validations.jsonl"
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        *char_corpus_run(tmp_path, "csv"),
        "trainer.max_steps=12",
        "data.batch_size=4",
        "global_batch_size=8",
        "trainer.val_check_interval=6",  # micro-batches: after optimizer steps 3, 6, 9, 12
        "callbacks.model_checkpoint.every_n_train_steps=3",
        f"callbacks.model_checkpoint.mode={mode}",
        "+callbacks.validations._target_=tests.test_best_checkpoint.RecordValidations",
        f"+callbacks.validations.path={records}",
        f"+callbacks.validations.dirpath={run_dir / 'checkpoints'}",
    )
    train(cfg)
    seen = [json.loads(line) for line in records.read_text().splitlines()]
    assert [r["step"] for r in seen] == [3, 6, 9, 12]
    # The CSV's val rows are these validations, then the final one on the whole val split.
    with (run_dir / "csv" / "metrics.csv").open(newline="") as f:
        val_rows = [float(row["val/loss"]) for row in csv.DictReader(f) if row["val/loss"]]
    assert val_rows[:-1] == [r["loss"] for r in seen]

    best = (min if mode == "min" else max)(seen, key=lambda r: r["loss"])
    if mode == "max":
        assert best == seen[0]  # the later validations do not make the best
    (path,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    assert path.name == f"best-step={best['step']}-val_loss={best['loss']:.4f}.ckpt"
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == best["step"]
    assert weights_digest(checkpoint["state_dict"]) == best["digest"]
    assert checkpoint["lmtrain"]["val_loss"] == best["loss"]
    key = STATE_KEY.replace("'min'", repr(mode))
    assert float(checkpoint["callbacks"][key]["best_model_score"]) == best["loss"]
    # last.ckpt names the same best checkpoint, under the key earlier checkpoints used.
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 12
    assert Path(last["callbacks"][key]["best_model_path"]) == path
    # After each validation, last.ckpt holds it, whether it made the best or not.
    assert [r["last"] for r in seen] == [[r["step"], r["loss"]] for r in seen]


class StallInValidation(Callback):
    """In the first validation during fit that directly follows the optimizer step of a
    scheduled save (a step after the first one that is a multiple of `every`), once its first
    batch is done: writes `marker` (that step) and sleeps, for the test to kill the run."""

    def __init__(self, marker: str, every: int) -> None:
        self.marker, self.every = Path(marker), every

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        step = trainer.global_step
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if step % self.every or step <= self.every or accumulating(trainer):
            return
        write_marker(self.marker, str(step))
        time.sleep(600)  # killed here


@pytest.mark.slow
def test_kill_during_a_validation_at_a_scheduled_save_redoes_that_validation(
    tmp_path: Path, data_dir: Path
) -> None:
    """tests/helpers/killed_runs.py's run (a save every 3 steps, validations between and at
    saves), killed with SIGKILL inside a validation that falls on a scheduled save: it resumes
    from the save before, validates there again, and ends as the uninterrupted run, with the
    same val rows and text samples."""
    corpus = resumable_corpus(tmp_path / "corpus")
    reference, run_dir, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    finish(train_command(corpus, data_dir, reference), log)
    command = train_command(corpus, data_dir, run_dir)
    marker = tmp_path / "stalled"
    stall = [
        "+callbacks.stall._target_=tests.test_best_checkpoint.StallInValidation",
        f"+callbacks.stall.marker={marker}",
        "+callbacks.stall.every=3",
    ]
    kill_at_marker([*command, *stall], log, marker)
    step = int(marker.read_text())
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference)  # every CSV row, the val rows among them
    assert (run_dir / "samples.txt").read_text() == (reference / "samples.txt").read_text()
    # Written before the validation in flight, a checkpoint at `step` would resume past it.
    assert last["global_step"] < step


def test_a_resume_with_another_save_schedule_keeps_the_best_checkpoint(
    tmp_path: Path, data_dir: Path
) -> None:
    """`every_n_train_steps` is part of the callback's state key: resumed with another one (and
    another learning rate, so that later validations rank differently), the run still knows its
    best checkpoint so far: one best-* file (save_top_k=1), the lowest ranked val/loss."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv")
    first = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    longer = ["trainer.max_steps=8", "model.optimizer.lr=0.5", "ckpt_path=last"]
    every = "callbacks.model_checkpoint.every_n_train_steps=1"
    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", *longer, every)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        losses = [float(r["val/loss"]) for r in csv.DictReader(f) if r["val/loss"]]
    best = list((run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1, best
    assert best[0].name.endswith(f"val_loss={min(losses[:-1]):.4f}.ckpt"), (best, losses)


def test_a_run_folder_moved_before_its_resume_keeps_the_best_checkpoint(
    tmp_path: Path, data_dir: Path
) -> None:
    """Lightning forgets the best checkpoints so far when the checkpoint folder is another one.
    Moved and resumed with a learning rate that makes later validations worse, the run still
    keeps its best: one best-* file (save_top_k=1), the lowest val/loss, named in the moved
    folder by the final last.ckpt."""
    cli = tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv")
    first = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-3000:]
    run = (tmp_path / "run").rename(tmp_path / "moved")
    longer = ["trainer.max_steps=8", "model.optimizer.lr=0.5", "ckpt_path=last"]
    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", *longer)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        losses = [float(r["val/loss"]) for r in csv.DictReader(f) if r["val/loss"]]
    (best,) = list((run / "checkpoints").glob("best-*.ckpt"))
    assert best.name.endswith(f"val_loss={min(losses[:-1]):.4f}.ckpt"), (best, losses)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_path"] == str(best)


def test_a_copied_run_missing_one_best_checkpoint_keeps_the_others(
    tmp_path: Path, data_dir: Path
) -> None:
    """A run folder copied (here: with the better of its two best checkpoints deleted from the
    copy) and resumed keeps ranking the best checkpoint it still has: the deleted one is named
    as missing and forgotten, the other stays among the top k, and no best-* file is left on
    disk that the run no longer tracks. The original folder is not touched."""
    top2 = "callbacks.model_checkpoint.save_top_k=2"
    cli = tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv", top2)
    first = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-3000:]
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "run", copy)
    old = sorted((copy / "checkpoints").glob("best-*.ckpt"), key=val_loss_of)
    assert len(old) == 2, old
    old[0].unlink()
    longer = ["trainer.max_steps=8", "model.optimizer.lr=0.5", "ckpt_path=last"]
    resumed = run_cli("train", *cli, f"hydra.run.dir={copy}", *longer)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "missing from" in resumed.stderr and old[0].name in resumed.stderr
    assert "that are not its checkpoints" not in resumed.stderr
    last = torch.load(copy / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint")]
    on_disk = {str(p) for p in (copy / "checkpoints").glob("best-*.ckpt")}
    assert set(state["best_k_models"]) == on_disk, (state["best_k_models"], on_disk)
    # The two best of the kept file and the resumed run's validations (steps 6 and 8).
    candidates = [str(old[1])] + [p for p in on_disk if p != str(old[1])]
    expected = sorted(candidates, key=lambda p: val_loss_of(Path(p)))[:2]
    assert on_disk == set(expected), (on_disk, expected)
    assert state["best_model_path"] == expected[0]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("best-*")) == sorted(
        p.name for p in old
    )


def val_loss_of(path: Path) -> float:
    """The val/loss a best checkpoint's name holds (`best-step=N-val_loss=X.ckpt`)."""
    return float(path.stem.rpartition("val_loss=")[2])
