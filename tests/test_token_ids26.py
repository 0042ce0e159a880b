"""Red team rev_model26: a special-token id outside the vocabulary (GPT-2's 50256 copied into a
char model's config) trained without a word and went into the export's config.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.parametrize("key", ["eos_token_id", "bos_token_id", "pad_token_id"])
def test_a_token_id_outside_the_vocabulary_is_refused_and_leaves_no_run_folder(
    key: str, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, tmp_path / "data", "logger=csv", f"hydra.run.dir={run}")
    result = run_cli("train", *cli, f"+model.config.{key}=50256")
    assert_one_line_error(result, f"model.config.{key}=50256 is outside the vocabulary", "below")
    assert not run.exists()


def test_a_token_id_inside_the_vocabulary_trains(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, tmp_path / "data", "logger=csv", f"hydra.run.dir={run}")
    result = run_cli("train", *cli, "+model.config.pad_token_id=0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
