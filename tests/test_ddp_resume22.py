"""A DDP resume refused at train start (another accumulation, the checkpoint not at a step
boundary of both) says so in one line and leaves the run folder's records as they were: the CSV
logger's hparams.yaml and TensorBoard's hyperparameters stay those the run trained with (red team
rev_dist22: the line came once per rank, and hparams.yaml took the refused settings)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from tests.helpers.cli import run_cli, tiny_cli

SESSION_START = "_hparams_/session_start_info"
REFUSAL = "is not a step boundary of both"


def tensorboard_events(folder: Path) -> list[tuple[str, int, list[str]]]:
    """(file, step, tags) of every event with a summary in the folder's event files."""
    found = []
    for path in sorted(folder.glob("events.out.tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            tags = [value.tag for value in event.summary.value]
            if tags:
                found.append((path.name, event.step, tags))
    return found


@pytest.mark.slow
def test_a_ddp_resume_refused_at_train_start_prints_one_line_and_changes_no_record(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    loggers = ["logger=many", "~logger.wandb", f"hydra.run.dir={run}", "trainer=ddp_cpu"]
    cli = tiny_cli(tmp_path, data_dir, *loggers)
    # 3 micro-batches a step of 1: a checkpoint 3 batches into the epoch.
    out = run_cli("train", *cli, "trainer.max_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    hparams = (run / "csv" / "hparams.yaml").read_text()
    events = tensorboard_events(run / "tensorboard")
    # The hyperparameters reach TensorBoard once, with the run's metrics.
    assert sum(SESSION_START in tags for _, _, tags in events) == 1

    # 2 micro-batches a step (32 / 8 / 2 ranks): 3 is not a step boundary of both.
    out = run_cli("train", *cli, "trainer.max_steps=6", "ckpt_path=last", "global_batch_size=32")
    assert out.returncode == 1, out.stderr[-3000:]
    output = out.stdout + out.stderr
    assert output.count(REFUSAL) == 1, output[-3000:]  # rank 0's line only
    assert "error: the checkpoint was saved 3 micro-batches into its epoch" in out.stderr
    assert (run / "csv" / "hparams.yaml").read_text() == hparams
    assert "global_batch_size: 32" not in hparams
    assert tensorboard_events(run / "tensorboard") == events  # no refused hyperparameters
