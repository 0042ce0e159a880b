"""EarlyStopping's stop survives an interruption at a validation at an epoch's end.

With validation once an epoch (`val_check_interval=1.0`), Lightning's EarlyStopping decides by
default in `on_train_epoch_end`: after lmtrain's checkpoint callback wrote that validation's
last.ckpt. A run preempted (SIGTERM) at the epoch's last step, whose resume runs the validation
first, never decided on it; a run killed between the validation and the epoch's end resumed
past the decision. Either way the run trained an epoch past the uninterrupted run's stop (red
team, fixES19). lmtrain now builds every EarlyStopping of the callbacks config (a subclass too)
with `check_on_train_epoch_end=False`: it decides right after each validation, before
last.ckpt, which holds the decision.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.instantiate import instantiate_callbacks
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

STEPS_PER_EPOCH = 5  # 45 train windows of 32 tokens, 8 a batch
# Up to 4 epochs, a validation at the end of each. The val loss falls, so with mode=max the
# first validation (step 5) stays the best, and patience=1 stops the run at the second (step 10).
EPOCHS = [
    "logger=csv",
    "callbacks.text_samples=null",
    "trainer.max_steps=-1",
    "trainer.max_epochs=4",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "callbacks.model_checkpoint.mode=max",
    "+callbacks.early_stopping.monitor=val/loss",
    "+callbacks.early_stopping.mode=max",
    "+callbacks.early_stopping.patience=1",
]
LIGHTNINGS = "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping"
HERE = "tests.test_early_stopping19"
SUBCLASS = f"+callbacks.early_stopping._target_={HERE}.PatientStopping"
STOP_STEP = 2 * STEPS_PER_EPOCH
# What metrics.json holds of the process that ended the run, not of its training.
PER_PROCESS = ("time/", "tok/s")


class PatientStopping(EarlyStopping):
    """A user's subclass of EarlyStopping: it decides where EarlyStopping does."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, epoch_corpus: Path) -> Path:
    """The uninterrupted run: EarlyStopping ends it at step 10, of 20."""
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    cli = tiny_cli(root, data_dir, *EPOCHS, LIGHTNINGS, f"hydra.run.dir={run}", corpus=epoch_corpus)
    done = run_cli("train", *cli)
    assert done.returncode == 0, done.stderr[-3000:]
    assert last_step(run) == STOP_STEP
    return run


def last_step(run: Path) -> int:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"]


def training_metrics(run: Path) -> dict[str, float]:
    """metrics.json, but for the timings of the process that wrote it."""
    metrics = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in metrics.items() if not k.startswith(PER_PROCESS)}


def assert_stopped_as_the_reference(run: Path, reference: Path) -> None:
    """Stopped at the reference's step, with its best checkpoint (name and weights), its final
    weights and its metrics."""
    assert last_step(run) == last_step(reference) == STOP_STEP
    for name in ("last.ckpt", f"best-step={STEPS_PER_EPOCH}-"):
        ours = sorted((run / "checkpoints").glob(f"{name}*"))
        theirs = sorted((reference / "checkpoints").glob(f"{name}*"))
        assert [p.name for p in ours] == [p.name for p in theirs] and len(ours) == 1, ours
        weights = [
            torch.load(p, map_location="cpu", weights_only=True)["state_dict"]
            for p in (*ours, *theirs)
        ]
        assert all(torch.equal(v, weights[0][k]) for k, v in weights[1].items()), name
    assert training_metrics(run) == pytest.approx(training_metrics(reference), rel=1e-6)


def test_preempted_at_an_epochs_last_step_the_resume_stops_where_the_run_did(
    tmp_path: Path, data_dir: Path, epoch_corpus: Path, reference: Path
) -> None:
    """SIGTERM in step 10, before epoch 1's validation: the run stops before it, and the resume
    runs it first. EarlyStopping decides on it then, and the run ends at step 10 (it used to
    decide only at the epoch's end, which that resume never reached: it trained to step 15)."""
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path, data_dir, *EPOCHS, LIGHTNINGS, f"hydra.run.dir={run}", corpus=epoch_corpus
    )
    signal_it = [
        "+callbacks.signal._target_=tests.helpers.faults.SignalBeforeValidation",
        "+callbacks.signal.signal=SIGTERM",
        "+callbacks.signal.nth=2",
    ]
    stopped = run_cli("train", *cli, *signal_it)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert f"preempted by SIGTERM at step {STOP_STEP}" in stopped.stderr
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_stopped_as_the_reference(run, reference)


def test_a_subclass_killed_after_the_epoch_end_validation_resumes_stopped(
    tmp_path: Path, data_dir: Path, epoch_corpus: Path, reference: Path
) -> None:
    """kill -9 once epoch 1's validation and its last.ckpt are done, before the epoch's end: the
    decision to stop is in that last.ckpt, and the resume trains nothing more. It used to be
    made at the epoch's end, after the save, so the resume trained to step 15. A subclass of
    EarlyStopping is built to decide where EarlyStopping does."""
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path, data_dir, *EPOCHS, SUBCLASS, f"hydra.run.dir={run}", corpus=epoch_corpus
    )
    kill = [
        "+callbacks.kill._target_=tests.helpers.killed_runs.KillAtTrainEpochEnd",
        "+callbacks.kill.epoch=1",
    ]
    killed = run_cli("train", *cli, *kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert last_step(run) == STOP_STEP
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_stopped_as_the_reference(run, reference)


def test_deciding_at_the_epochs_end_is_refused_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    """`check_on_train_epoch_end=true` would bring the epoch-end decision back: refused before
    training, for EarlyStopping in the config checks, for a subclass where it is built."""
    key = "+callbacks.early_stopping.check_on_train_epoch_end=true"
    run = f"hydra.run.dir={tmp_path / 'run'}"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, run, *EPOCHS[-3:], LIGHTNINGS, key))
    assert_one_line_error(out, "callbacks.early_stopping.check_on_train_epoch_end=true")
    entry = {"_target_": f"{HERE}.PatientStopping", "check_on_train_epoch_end": True}
    with pytest.raises(LMTrainError, match=r"^callbacks\.stop\.check_on_train_epoch_end=true "):
        instantiate_callbacks(OmegaConf.create({"stop": entry}))


class FixedArgumentsStopping(EarlyStopping):
    """A subclass whose constructor takes no `check_on_train_epoch_end` (rev_diff19: passing it
    made Hydra's instantiation fail with a TypeError)."""

    def __init__(self, monitor: str, patience: int = 1) -> None:
        super().__init__(monitor=monitor, patience=patience)


def test_every_early_stopping_of_the_config_decides_after_validation_where_it_can() -> None:
    entries = {
        "lightnings": {"_target_": LIGHTNINGS.split("=", 1)[1], "monitor": "val/loss"},
        "subclass": {"_target_": f"{HERE}.PatientStopping", "monitor": "val/loss"},
        "fixed": {"_target_": f"{HERE}.FixedArgumentsStopping", "monitor": "val/loss"},
    }
    built = instantiate_callbacks(OmegaConf.create(entries))
    # Lightning's None means "decide at the epoch's end when validation runs once an epoch".
    decides = [callback._check_on_train_epoch_end for callback in built]
    assert decides == [False, False, None]
