"""A checkpoint folder that cannot be written is refused before training, in one line.

Red team: a read-only `callbacks.model_checkpoint.dirpath` (or a teammate's run resumed in place
with its `checkpoints/` read-only) was found at the first save, after the training up to it, as
a PermissionError traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.parametrize("where", ["outside the run folder", "the run folder's own"])
def test_a_checkpoint_folder_that_cannot_be_written_is_refused_before_training(
    tmp_path: Path, data_dir: Path, read_only_dir: Path, where: str
) -> None:
    run = tmp_path if where == "the run folder's own" else tmp_path / "run"
    dirpath = read_only_dir / "checkpoints" if where == "outside the run folder" else read_only_dir
    cli = tiny_cli(
        tmp_path,
        data_dir,
        "logger=csv",
        f"hydra.run.dir={run}",
        f"callbacks.model_checkpoint.dirpath={dirpath}",
    )
    out = run_cli("train", *cli)
    assert_one_line_error(
        out,
        f"callbacks.model_checkpoint.dirpath={dirpath} cannot be created or written "
        "(Read-only file system), and the run would fail at its first save",
        "make it writable, or pass another callbacks.model_checkpoint.dirpath",
    )
    assert not (run / "csv" / "metrics.csv").exists()  # refused before the first step
