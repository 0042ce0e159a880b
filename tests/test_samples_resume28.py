"""`samples.every_n_val` counts validations across a preemption: a resumed run samples the steps
an uninterrupted one does, the N-th, 2N-th, ... validation (red team cb28, findings 1 and 4)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from lmtrain.callbacks.samples import TextSamples
from lmtrain.errors import LMTrainError
from lmtrain.utils.callback_state_keys import refuse_shared_state_keys
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.samples import blocks

# Validations after steps 2, 4, 6 and 8; every 2nd one samples.
EVERY_2ND = ("logger=none", "trainer.max_steps=8", "samples.every_n_val=2")
# SIGTERM before step 4's optimizer step (the 2nd step a validation follows): the preemption
# saves last.ckpt at step 4 and stops before its validation, which the resumed run runs first.
PREEMPT = (
    "+callbacks.signal._target_=tests.helpers.faults.SignalBeforeValidation",
    "+callbacks.signal.signal=SIGTERM",
    "+callbacks.signal.nth=2",
)


def sampled_steps(run: Path) -> list[int]:
    return [step for step, _ in blocks(run / "samples.txt")]


def test_preempted_and_resumed_run_samples_the_steps_an_uninterrupted_one_does(
    tmp_path: Path, data_dir: Path
) -> None:
    """The count of validations is in the checkpoint: counted from 0 again, the resumed run
    took the validation at step 4 for its 1st and sampled 2, 4 and 8 (uninterrupted: 2, 6, 8).
    every_n_val=2 samples the 2nd and 4th validation (steps 4 and 8), not the 1st and 3rd; the
    final validation (step 8 again) adds no second block of the same weights."""
    cli = tiny_cli(tmp_path, data_dir, *EVERY_2ND)
    reference, run = tmp_path / "reference", tmp_path / "run"
    done = run_cli("train", *cli, f"hydra.run.dir={reference}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sampled_steps(reference) == [4, 8]

    preempted = run_cli("train", *cli, f"hydra.run.dir={run}", *PREEMPT)
    assert preempted.returncode == 128 + signal.SIGTERM, preempted.stderr[-3000:]
    assert "preempted by SIGTERM at step 4" in preempted.stderr, preempted.stderr[-3000:]
    assert not (run / "samples.txt").exists()  # the validation at step 2 did not sample
    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sampled_steps(run) == [4, 8]


def test_two_samples_callbacks_of_other_files_keep_their_own_states(tmp_path: Path) -> None:
    """Saving the count made TextSamples stateful, under its class name alone: two of them
    (other prompts, other files) became one key, which Lightning refuses."""
    first = TextSamples(["a"], tmp_path, filename="samples.txt")
    second = TextSamples(["b"], tmp_path, filename="other.txt")
    refuse_shared_state_keys({"text_samples": first, "more_samples": second})
    with pytest.raises(LMTrainError, match=r"callbacks\.again would save its state"):
        refuse_shared_state_keys({"text_samples": first, "again": TextSamples(["c"], tmp_path)})
