"""Resumes across an epoch's edge end as the uninterrupted run does (red team rev_epoch18).

The corpus holds 45 train windows of 32 tokens: epochs of 5 steps of 8 windows, 15 steps in 3
epochs, a validation at each epoch's end (or every second one).

- A preemption at an epoch's last step, then a second interruption in the next epoch (SIGTERM,
  or SIGKILL after a scheduled last.ckpt): the resumed process never counted that epoch
  started, so its saves held it as finished, and the last resume trained 3 steps too many
  with validations 3 steps late (H1). The validation due after the preempted step was logged
  in the next epoch (M2), and where `check_val_every_n_epoch` skips that epoch, not run at all.
- A run that `max_steps` ended mid-epoch, extended with `max_epochs`, began the next epoch:
  the rest of the cut one was never trained (H3).

tests/test_lightning_compat_epochs.py checks the functions of lmtrain.lightning_compat.epochs
(and the change to `lightning_compat.mark_validation_pending`) on Lightning alone.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import lightning as L
import pytest
import torch

from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import SENTENCE_WORDS
from tests.helpers.killed_runs import IGNORED

STEPS = 15  # 3 epochs of 5 steps
EPOCH_RUN = [
    "logger=csv",
    "trainer.max_steps=-1",
    f"trainer.max_epochs={STEPS // 5}",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "model.scheduler=null",  # one learning rate, whichever limit sizes the run
    "callbacks.model_checkpoint.every_n_train_steps=3",
]
EVERY_SECOND_EPOCH = "trainer.check_val_every_n_epoch=2"


class SignalAtStep(L.Callback):
    """Sends `signal` (a name) to this process in optimizer step `step` (counted from 1),
    before the step: preemption stops once it ends; SIGKILL ends the process in it."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step, self.signal = step, signal

    def on_before_optimizer_step(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step + 1 == self.step:
            os.kill(os.getpid(), signal.Signals[self.signal])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("epoch_resume")
    # 1600 characters, the last 10% val: 1440 train tokens, 45 windows of 32.
    (root / "corpus.txt").write_text(((SENTENCE_WORDS + ".\n") * 15)[:1600])
    return root


def train(root: Path, data_dir: Path, run: Path, *overrides: str) -> int:
    """A tiny run of `EPOCH_RUN` in `run`, `overrides` added; its exit status."""
    cli = tiny_cli(root, data_dir, *EPOCH_RUN, *overrides, corpus=root / "corpus.txt")
    out = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert out.returncode in (0, 128 + signal.SIGTERM, -signal.SIGKILL), out.stderr[-3000:]
    return out.returncode


@pytest.fixture(scope="module")
def uninterrupted(root: Path, data_dir: Path) -> Callable[..., Path]:
    """The run that resumed ones with the same `overrides` are compared with, trained once."""
    runs: dict[tuple[str, ...], Path] = {}

    def reference(*overrides: str) -> Path:
        if overrides not in runs:
            runs[overrides] = root / f"uninterrupted{len(runs)}"
            assert train(root, data_dir, runs[overrides], *overrides) == 0
        return runs[overrides]

    return reference


def rows(run: Path) -> list[dict[str, str]]:
    """csv/metrics.csv, row by row, without empty cells and wall-clock columns."""
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [
            {k: v for k, v in row.items() if v and not any(p in k for p in IGNORED)}
            for row in csv.DictReader(f)
        ]


def final(run: Path) -> tuple[int, dict[str, torch.Tensor], dict[str, float]]:
    """The step and weights of last.ckpt, and metrics.json without wall-clock figures."""
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    reported = json.loads((run / "metrics.json").read_text())
    reported = {k: v for k, v in reported.items() if not any(p in k for p in IGNORED)}
    return last["global_step"], last["state_dict"], reported


def assert_same_end(run: Path, reference: Path) -> None:
    step, weights, reported = final(run)
    ref_step, ref_weights, ref_reported = final(reference)
    assert step == ref_step == STEPS
    assert [k for k in ref_weights if not torch.equal(weights[k], ref_weights[k])] == []
    assert reported == ref_reported


def interrupted(root: Path, data_dir: Path, run: Path, stops: list[str], *extra: str) -> None:
    """Train in `run`, stopped at each of `stops` (`<step>:<signal>`) in turn, each stop resumed
    with `ckpt_path=last`, and the last resume trained to the end."""
    for i, stop in enumerate(stops):
        step, name = stop.split(":")
        sig = [
            f"+callbacks.sig._target_={__name__}.SignalAtStep",
            f"+callbacks.sig.step={step}",
            f"+callbacks.sig.signal={name}",
        ]
        code = train(root, data_dir, run, *extra, *sig, *(["ckpt_path=last"] if i else []))
        expected = -signal.SIGKILL if name == "SIGKILL" else 128 + signal.Signals[name]
        assert code == expected, f"stop {stop}: exit {code}"
    assert train(root, data_dir, run, *extra, "ckpt_path=last") == 0


@pytest.mark.parametrize(
    ("stops", "extra"),
    [
        # Preempted at epoch 0's end (before its validation), then in epoch 1.
        (["5:SIGTERM", "7:SIGTERM"], []),
        # ... then killed in step 8: the resume is from the scheduled last.ckpt of step 6.
        (["5:SIGTERM", "8:SIGKILL"], []),
        # Validations after epochs 1 and 3 only: preempted at epoch 0's end (no validation
        # follows), in epoch 1, and at its end (one follows, that epoch's, not the next's).
        (["5:SIGTERM", "7:SIGTERM", "10:SIGTERM"], [EVERY_SECOND_EPOCH]),
        # A validation after each epoch's 3rd step: preempted before it, killed after the
        # last.ckpt written once it ended, in step 4. That save held the validation as under
        # way: the resume ran it again, on the batches it had left (none), a second row.
        (["3:SIGTERM", "4:SIGKILL"], ["trainer.val_check_interval=3"]),
    ],
    ids=["sigterm-sigterm", "sigterm-sigkill", "every-second-epoch", "mid-epoch-validation"],
)
def test_a_run_interrupted_at_and_after_an_epochs_end_ends_as_an_uninterrupted_one(
    tmp_path: Path,
    root: Path,
    data_dir: Path,
    uninterrupted: Callable[..., Path],
    stops: list[str],
    extra: list[str],
) -> None:
    run = tmp_path / "run"
    interrupted(root, data_dir, run, stops, *extra)
    reference = uninterrupted(*extra)
    # Every row (steps, epochs, values, the validations' among them), weights and metrics.
    assert rows(run) == rows(reference)
    assert_same_end(run, reference)


@pytest.mark.parametrize(
    ("ended_at", "extended"),
    [
        (7, ["trainer.max_epochs=3"]),  # mid-epoch 1
        (7, ["trainer.max_epochs=-1", f"trainer.max_steps={STEPS}"]),
        (7, [f"trainer.max_steps={STEPS}"]),  # both limits: max_epochs=3 is not reached first
        (5, ["trainer.max_epochs=3"]),  # at epoch 0's end
    ],
)
def test_a_run_max_steps_ended_extended_trains_what_the_uninterrupted_run_does(
    tmp_path: Path,
    root: Path,
    data_dir: Path,
    uninterrupted: Callable[..., Path],
    ended_at: int,
    extended: list[str],
) -> None:
    run, reference = tmp_path / "run", uninterrupted()
    first = train(root, data_dir, run, f"trainer.max_steps={ended_at}", "trainer.max_epochs=-1")
    assert first == 0
    ended = rows(run)
    assert train(root, data_dir, run, *extended, "ckpt_path=last") == 0
    assert_same_end(run, reference)
    # The rows of the run that ended (its final validation last), then the uninterrupted
    # run's from the next step on: the rest of the cut epoch, its validation, at their steps.
    assert ended[-1]["step"] == str(ended_at) and "val/loss" in ended[-1]
    after = [row for row in rows(reference) if int(row["step"]) >= ended_at]
    assert rows(run) == ended + after
