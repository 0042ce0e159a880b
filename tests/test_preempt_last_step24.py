"""A preemption at the run's last step, before the validation due there, and signals in the
final validation (red team fault24, findings 1 and 3).

The preempted run stops before that validation; resumed, it must run it (its CSV row, text
samples and best checkpoint as an uninterrupted run's) instead of taking the run for ended,
also when resumed with `trainer.max_steps` lowered to the step it stopped at. SIGUSR1 in the
final validation (`trainer.validate`) must stop with one `error:` line and 138, as SIGTERM does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.killed_runs import (
    IGNORED,
    csv_history,
    csv_rows,
    finish,
    resumable_corpus,
    start,
    train_command,
)

pytestmark = pytest.mark.slow
# Validations every 2 steps (4 micro-batches), epochs of 4 steps: step 6 is inside epoch 1.
EVERY = "trainer.val_check_interval=4"
SIGNAL_AT = "+callbacks.signal._target_=tests.helpers.faults.SignalBeforeValidation"


def state(run: Path) -> dict[str, object]:
    """What must match the uninterrupted run: every CSV row (values as written), metrics.json
    without wall-clock keys, the best checkpoint's name, the samples, the final weights."""
    with (run / "csv" / "metrics.csv").open() as f:
        header, *lines = f.read().splitlines()
    keep = [i for i, k in enumerate(header.split(",")) if not any(p in k for p in IGNORED)]
    rows = [tuple(line.split(",")[i] for i in keep) for line in lines]
    metrics = json.loads((run / "metrics.json").read_text())
    final = torch.load(run / "final_weights.pt", map_location="cpu", weights_only=True)
    return {
        "rows": rows,
        "row_keys": csv_rows(run),
        "metrics": {k: v for k, v in metrics.items() if not any(p in k for p in IGNORED)},
        "best": sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt")),
        "samples": re.sub(r"in [0-9.]+ ?s", "", (run / "samples.txt").read_text()),
        "weights": {k: v.tolist() for k, v in final["state_dict"].items()},
    }


def preempt_before_validation(command: list[str], log: Path, nth: int) -> int:
    """Run `command` until SIGUSR1 before the `nth` step a validation follows; the saved step."""
    proc = start([*command, SIGNAL_AT, f"+callbacks.signal.nth={nth}"], log)
    assert proc.wait(timeout=300) == 128 + signal.SIGUSR1, log.read_text()[-3000:]
    saved = torch.load(proc_last(command), map_location="cpu", weights_only=True)
    return saved["global_step"]


def proc_last(command: list[str]) -> Path:
    run = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=", 1)[1])
    return run / "checkpoints" / "last.ckpt"


def preempted_and_resumed(tmp_path: Path, data_dir: Path, steps: int) -> tuple[dict, dict, str]:
    """A run of `steps` steps and one preempted before the validation after its last step,
    then resumed: their `state`s, and the resume's output."""
    corpus = resumable_corpus(tmp_path)
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    length = f"trainer.max_steps={steps}"
    finish(train_command(corpus, data_dir, reference, EVERY, length), log)
    command = train_command(corpus, data_dir, run, EVERY, length)
    assert preempt_before_validation(command, log, nth=steps // 2) == steps
    log.write_text("")
    finish([*command, "ckpt_path=last"], log)
    return state(run), state(reference), log.read_text()


@pytest.mark.parametrize("steps", [6, 8])  # inside an epoch; at an epoch's end
def test_preempted_at_the_last_step_resumes_into_its_validation(
    tmp_path: Path, data_dir: Path, steps: int
) -> None:
    """Its row, best checkpoint and samples block as the uninterrupted run's; no "had ended"
    line (the samples' text: the test below)."""
    ours, theirs, output = preempted_and_resumed(tmp_path, data_dir, steps)
    assert "had ended" not in output, output[-3000:]
    assert ours["best"] == theirs["best"]
    assert ours["samples"].count("=== step") == theirs["samples"].count("=== step")
    del ours["samples"], theirs["samples"]
    assert ours == theirs


def test_the_pending_validation_samples_as_the_uninterrupted_run(
    tmp_path: Path, data_dir: Path
) -> None:
    """ExactResume put the checkpoint's RNG states back at the first train batch or at fit's
    end, not before a validation the resume starts with, whose text samples then drew from the
    seeded RNG (at any step, not only the last)."""
    ours, theirs, _ = preempted_and_resumed(tmp_path, data_dir, 6)
    assert ours["samples"] == theirs["samples"]


def test_preempted_then_resumed_with_max_steps_at_that_step(tmp_path: Path, data_dir: Path) -> None:
    """Preempted at step 4 of 8 before its validation, resumed with trainer.max_steps=4: the
    validation at 4 runs, the run ends there as a 4-step run, and its record says 4."""
    corpus = resumable_corpus(tmp_path)
    reference, run, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    finish(train_command(corpus, data_dir, reference, EVERY, "trainer.max_steps=4"), log)
    command = train_command(corpus, data_dir, run, EVERY, "trainer.max_steps=8")
    assert preempt_before_validation(command, log, nth=2) == 4
    log.write_text("")
    finish([*command, "trainer.max_steps=4", "ckpt_path=last"], log)
    assert "were not applied" not in log.read_text(), log.read_text()[-3000:]
    assert "max_steps: 4" in (run / ".hydra" / "config.yaml").read_text()
    ours, theirs = state(run), state(reference)
    assert ours["best"] == theirs["best"]
    # The train rows differ: the 4-step run logs its last step's, off log_every_n_steps=5.
    validations = [
        {s: r["val/loss"] for s, r in csv_history(d).items() if "val/loss" in r}
        for d in (run, reference)
    ]
    assert validations[0] == validations[1] and 4 - 1 in validations[0]
    assert ours["weights"] == theirs["weights"]


class SignalInFinalValidation(Callback):
    """`signal` (a name) to this process as the first val batch of `trainer.validate`, the
    validation after training, starts; with `in_fit`, of fit's last validation instead."""

    def __init__(self, signal: str = "SIGUSR1", in_fit: bool = False) -> None:
        self.signal, self.sent, self.in_fit = signal, False, in_fit

    def on_validation_batch_start(self, trainer: Trainer, pl_module: LightningModule, *_) -> None:
        at = TrainerFn.FITTING if self.in_fit else TrainerFn.VALIDATING
        last = not self.in_fit or trainer.global_step == trainer.max_steps
        if trainer.state.fn == at and last and not trainer.sanity_checking and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.Signals[self.signal])


@pytest.mark.parametrize("name", ["SIGUSR1", "SIGUSR2"])
def test_a_signal_in_the_final_validation_stops_with_one_line(
    tmp_path: Path, data_dir: Path, name: str
) -> None:
    corpus = resumable_corpus(tmp_path)
    run, log = tmp_path / "run", tmp_path / "train.out"
    command = train_command(corpus, data_dir, run, EVERY, "trainer.max_steps=3")
    signal_it = [
        "+callbacks.final_signal._target_=tests.test_preempt_last_step24.SignalInFinalValidation",
        f"+callbacks.final_signal.signal={name}",
    ]
    proc = start([*command, *signal_it], log)
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 128 + signal.Signals[name], text[-3000:]
    result = subprocess.CompletedProcess(command, code, "", text)
    assert_one_line_error(result, f"terminated by {name} outside the training steps", "resume")
    assert not (run / "metrics.json").exists()
    finish([*command, "ckpt_path=last"], log)
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 3


def test_a_signal_in_fits_last_validation_stops_before_the_final_one(
    tmp_path: Path, data_dir: Path
) -> None:
    """No training step follows fit's last validation to act on a signal received in it, and
    the final validation's handlers forgot it: the run ended with exit 0 (rev_diff24c)."""
    corpus = resumable_corpus(tmp_path)
    run, log = tmp_path / "run", tmp_path / "train.out"
    command = train_command(corpus, data_dir, run, EVERY, "trainer.max_steps=4")
    signal_it = [
        "+callbacks.final_signal._target_=tests.test_preempt_last_step24.SignalInFinalValidation",
        "+callbacks.final_signal.signal=SIGTERM",
        "+callbacks.final_signal.in_fit=true",
    ]
    proc = start([*command, *signal_it], log)
    code = proc.wait(timeout=300)
    text = log.read_text()
    assert code == 128 + signal.SIGTERM, text[-3000:]
    result = subprocess.CompletedProcess(command, code, "", text)
    assert_one_line_error(result, "terminated by SIGTERM outside the training steps", "resume")
    assert not (run / "metrics.json").exists()
    finish([*command, "ckpt_path=last"], log)
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
