"""The best checkpoint of a validation at an epoch's end survives a stop right after it, and a
resume leaves what it need not write alone.

Lightning ranks the best checkpoint of an epoch-end validation (every epoch,
`val_check_interval=1.0`) in `on_train_epoch_end`, after lmtrain wrote that validation's
last.ckpt: a run preempted at the epoch's last step ran the validation on resume but never
ranked it, and a run killed between the two resumed past it; either way the uninterrupted run's
best checkpoint was lost for good (red team, rev_epoch18). `StepScheduledCheckpoint` now ranks
it right after the validation, before last.ckpt, as for validations inside an epoch.

Also: a resume of a run that EarlyStopping had ended rewrote its last.ckpt (its training time,
its val loss gone), and a killed write of a best checkpoint, whose name no later write takes
again, left its temporary file behind for good.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

# Epochs of 5 optimizer steps (45 train windows of 32 tokens, 8 a batch), a validation at the end
# of each, 3 epochs. The val loss falls, so with mode=max the first validation (step 5) stays
# the best: a run that never ranks it keeps a later one.
EPOCHS = [
    "logger=csv",
    "callbacks.text_samples=null",
    "trainer.max_steps=-1",
    "trainer.max_epochs=3",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "callbacks.model_checkpoint.mode=max",
]
STEPS_PER_EPOCH = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, epoch_corpus: Path) -> Path:
    """The uninterrupted run."""
    root = tmp_path_factory.mktemp("reference")
    run = root / "run"
    cli = tiny_cli(root, data_dir, *EPOCHS, f"hydra.run.dir={run}", corpus=epoch_corpus)
    done = run_cli("train", *cli)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def best_checkpoints(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The run's best-* checkpoints by name: their weights."""
    found = {}
    for path in sorted((run / "checkpoints").glob("best-*.ckpt")):
        found[path.name] = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return found


def assert_same_best_and_end(run: Path, reference: Path) -> None:
    """The reference's best checkpoint (the first validation's), by name and weights, and no
    other; the same final weights."""
    ours, theirs = best_checkpoints(run), best_checkpoints(reference)
    (name,) = theirs  # save_top_k=1
    assert name.startswith(f"best-step={STEPS_PER_EPOCH}-"), theirs
    assert list(ours) == list(theirs)
    for name, weights in theirs.items():
        assert all(torch.equal(weights[k], ours[name][k]) for k in weights), name
    last = [
        torch.load(r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for r in (run, reference)
    ]
    assert last[0]["global_step"] == last[1]["global_step"] == 3 * STEPS_PER_EPOCH
    assert all(torch.equal(v, last[0]["state_dict"][k]) for k, v in last[1]["state_dict"].items())


def test_preempted_at_an_epochs_last_step_the_resumed_validation_makes_the_best_checkpoint(
    tmp_path: Path, data_dir: Path, epoch_corpus: Path, reference: Path
) -> None:
    """SIGTERM before the optimizer step that ends epoch 0: the run stops before that epoch's
    validation, and the resume runs it first. Its best checkpoint is written then, as in the
    uninterrupted run (it used to be ranked only in `on_train_epoch_end`, which the resumed
    validation never reaches: a later validation's became the best)."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *EPOCHS, f"hydra.run.dir={run}", corpus=epoch_corpus)
    signal_it = [
        "+callbacks.signal._target_=tests.helpers.faults.SignalBeforeValidation",
        "+callbacks.signal.signal=SIGTERM",
    ]
    stopped = run_cli("train", *cli, *signal_it)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert f"preempted by SIGTERM at step {STEPS_PER_EPOCH}" in stopped.stderr
    assert best_checkpoints(run) == {}  # stopped before the validation
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_best_and_end(run, reference)


def test_a_kill_after_an_epoch_end_validation_keeps_its_best_checkpoint(
    tmp_path: Path, data_dir: Path, epoch_corpus: Path, reference: Path
) -> None:
    """kill -9 once epoch 0's validation has ended and its last.ckpt is written: the best
    checkpoint of that validation is on disk already (written before last.ckpt, as after a
    validation inside an epoch), and the resumed run keeps it. It used to be ranked after
    last.ckpt, so the resume started past a validation never ranked."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *EPOCHS, f"hydra.run.dir={run}", corpus=epoch_corpus)
    kill = "+callbacks.kill._target_=tests.helpers.killed_runs.KillAtTrainEpochEnd"
    killed = run_cli("train", *cli, kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == STEPS_PER_EPOCH
    assert list(best_checkpoints(run)) == list(best_checkpoints(reference))
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_best_and_end(run, reference)


def test_ranking_at_the_epochs_end_is_refused_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    """`save_on_train_epoch_end=true` would bring Lightning's epoch-end ranking back, and with it
    the lost best checkpoints: refused in one line before training."""
    key = "+callbacks.model_checkpoint.save_on_train_epoch_end=true"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={tmp_path / 'run'}", key))
    assert_one_line_error(out, "callbacks.model_checkpoint.save_on_train_epoch_end=true")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_resuming_a_run_early_stopping_ended_leaves_its_last_checkpoint_as_it_was(
    tmp_path: Path, data_dir: Path
) -> None:
    """EarlyStopping (mode=max, patience 1, a falling val/loss) ends the run at its second
    validation, step 4 of 8. Resumed, it trains nothing, and its last.ckpt is the same file,
    byte for byte: Lightning's end-of-training save rewrote it on every resume (another
    training time, its val loss gone)."""
    run = tmp_path / "run"
    early = [
        "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
        "+callbacks.early_stopping.monitor=val/loss",
        "+callbacks.early_stopping.mode=max",
        "+callbacks.early_stopping.patience=1",
    ]
    cli = tiny_cli(
        tmp_path, data_dir, "logger=csv", "trainer.max_steps=8", f"hydra.run.dir={run}", *early
    )
    first = run_cli("train", *cli)
    assert first.returncode == 0, first.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4 and saved["lmtrain"]["val_loss"] is not None
    before = {path.name: (path.stat().st_ino, path.read_bytes()) for path in last.parent.iterdir()}
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = {path.name: (path.stat().st_ino, path.read_bytes()) for path in last.parent.iterdir()}
    assert after == before


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_checkpoint_writes_are_removed_when_the_run_resumes(
    tmp_path: Path, data_dir: Path
) -> None:
    """A best checkpoint's write killed mid-way leaves `.best-...ckpt.tmp-<pid>`, and no later
    write takes that name again (it holds its step). The resumed run removes it; a live
    process's (its write in progress) and files that are not its checkpoints' stay."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    first = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    folder = run / "checkpoints"
    killed = folder / f".best-step=3-val_loss=9.9999.ckpt.tmp-{dead_pid()}"
    killed_last = folder / f".last.ckpt.tmp-{dead_pid()}"
    live = folder / f".best-step=3-val_loss=9.9999.ckpt.tmp-{os.getpid()}"
    not_ours = [folder / f".notes.txt.tmp-{dead_pid()}", folder / ".best-step=3.ckpt.tmp-x1"]
    for path in (killed, killed_last, live, *not_ours):
        path.write_bytes(b"half a checkpoint")
    longer = ["trainer.max_steps=6", "ckpt_path=last"]
    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", *longer)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not killed.exists() and not killed_last.exists()
    assert live.exists() and all(path.exists() for path in not_ours)
