"""Two callbacks that would save their state under one Lightning `state_key` are one `error:`
line naming both config entries, before any data is prepared, and leave no run folder.

Before: Lightning's Trainer refused them with a RuntimeError that Hydra printed as several lines
("Error executing job ... Found more than one stateful callback of type `ModelCheckpoint`"),
after the data and the model were built, and the run folder stayed with a log that gave no
reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

TOP3 = [
    "+callbacks.top3._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.top3.monitor=val/loss",
    "+callbacks.top3.save_top_k=3",
    "+callbacks.top3.dirpath=${paths.output_dir}/top3",
]
STOPS = [
    "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.stop.monitor=val/loss",
    "+callbacks.stop.patience=2",
    "+callbacks.stop_late._target_=lightning.pytorch.callbacks.EarlyStopping",
    "+callbacks.stop_late.monitor=val/loss",
    "+callbacks.stop_late.patience=5",
]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            TOP3,
            (
                "callbacks.top3 would save its state in checkpoints under the same key as "
                "callbacks.model_checkpoint (state_key ModelCheckpoint{'monitor': 'val/loss'",
                "another monitor or mode, or another every_n_train_steps, every_n_epochs",
                "or drop one (~callbacks.top3)",
            ),
        ),
        (
            STOPS,
            (
                "callbacks.stop_late would save its state in checkpoints under the same key as "
                "callbacks.stop (state_key EarlyStopping{'monitor': 'val/loss', 'mode': 'min'})",
                "give callbacks.stop_late another monitor or mode, or drop one",
            ),
        ),
    ],
    ids=["checkpoints", "early_stoppings"],
)
def test_two_callbacks_of_one_state_key_are_one_line_before_data_prep(
    tmp_path: Path, overrides: list[str], fragments: tuple[str, ...]
) -> None:
    run, data = tmp_path / "run", tmp_path / "data"
    out = run_cli(
        "train", *tiny_cli(tmp_path, data, "logger=none", f"hydra.run.dir={run}"), *overrides
    )
    assert_one_line_error(out, *fragments)
    assert "Preparing data" not in out.stdout + out.stderr
    assert not data.exists(), "nothing is prepared before the check"
    assert not run.exists(), "the refused command's run folder is removed"


def test_a_second_checkpoint_on_its_own_schedule_still_runs(tmp_path: Path, data_dir: Path) -> None:
    # A key of its own (every_n_train_steps=2): Lightning saves both states; not refused.
    run = tmp_path / "run"
    overrides = [*TOP3, "+callbacks.top3.every_n_train_steps=2"]
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=none", "trainer.max_steps=2", f"hydra.run.dir={run}"),
        *overrides,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((run / "top3").glob("*.ckpt")), "the second checkpoint callback saved"
