"""Review of stop 52's diff (rev_diff22): a resume that trains nothing applies nothing.

- A run EarlyStopping had ended, resumed with a lower `save_top_k`, removed a best checkpoint
  and then said the override was not applied.
- A TensorBoard run resumed after it had ended, with another learning rate, wrote that rate as
  the run's hyperparameters (a new event file) although nothing trained with it.
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.cli import run_cli, tiny_cli
from tests.test_ddp_resume22 import SESSION_START, tensorboard_events

# Validation every 2 steps; no gain of 10 nats: EarlyStopping ends the run at its second one.
EARLY_STOP = (
    "trainer.max_steps=40",
    "trainer.val_check_interval=2",
    "+callbacks.early_stopping._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.early_stopping.monitor=val/loss",
    "+callbacks.early_stopping.patience=1",
    "+callbacks.early_stopping.min_delta=10",
)


def test_a_resume_of_an_ended_run_removes_no_best_checkpoint(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    top3 = "callbacks.model_checkpoint.save_top_k=3"
    cli = tiny_cli(tmp_path, data_dir, *EARLY_STOP, top3, f"hydra.run.dir={run}", "logger=csv")
    out = run_cli("train", *cli)
    assert out.returncode == 0, out.stderr[-3000:]
    best = sorted(p.name for p in (run / "checkpoints").glob("best*.ckpt"))
    assert len(best) == 2, best  # steps 2 and 4
    out = run_cli("train", f"resume={run}", "callbacks.model_checkpoint.save_top_k=1")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "save_top_k=1) were not applied" in out.stdout + out.stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("best*.ckpt")) == best


def test_a_resume_of_an_ended_run_writes_no_tensorboard_hyperparameters(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=4", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "logger=tensorboard")
    assert out.returncode == 0, out.stderr[-3000:]
    events = tensorboard_events(run / "tensorboard")
    assert sum(SESSION_START in tags for _, _, tags in events) == 1
    out = run_cli("train", f"resume={run}", "model.optimizer.lr=0.5")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.optimizer.lr=0.5) were not applied" in out.stdout + out.stderr
    assert tensorboard_events(run / "tensorboard") == events
