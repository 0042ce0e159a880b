"""A misspelt Trainer key (`+trainer.max_epoch=1`) was refused by the Trainer's TypeError after
the token cache and the model were built, and a misspelt data key (`+data.blocksize=16`,
`+data.source.val_frac=0.2`) by a TypeError with no close match. Both are now named with the
key they meant before any data work, as callbacks' and loggers' keys are."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli

# (override, the key, its class, the key it meant)
TYPOS = [
    ("+trainer.max_epoch=1", "trainer.max_epoch", "Trainer", "max_epochs"),
    (
        "+trainer.gradient_clip_value=1.0",
        "trainer.gradient_clip_value",
        "Trainer",
        "gradient_clip_val",
    ),
    ("+data.blocksize=16", "data.blocksize", "TextDataModule", "block_size"),
    ("+data.source.val_frac=0.2", "data.source.val_frac", "TextFilesSource", "val_fraction"),
]


@pytest.mark.parametrize(("override", "key", "cls", "meant"), TYPOS)
def test_a_misspelt_trainer_or_data_key_is_named_before_any_data_work(
    tmp_path: Path, override: str, key: str, cls: str, meant: str
) -> None:
    data_dir = tmp_path / "data"
    out = run_cli(
        "train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={tmp_path / 'run'}", override)
    )
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [text for text in out.stderr.splitlines() if text.startswith("error: ")]
    assert errors == [f"error: {key} is not an argument of {cls}: did you mean {meant}?"], errors
    assert not data_dir.exists()  # no token cache was built for a run that cannot start
    assert not (tmp_path / "run").exists()
