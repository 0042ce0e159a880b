"""Settings that name no folder, or a setting the chosen kind never reads: one line, no run.

An empty `dirpath` saved checkpoints into the working directory (the checkout) and `null` under
a logger's folder, where neither resume nor the other-run checks look; an empty `paths.data_dir`
put the token cache at `/cache`; an empty CSV `save_dir` wrote `csv/` into the working
directory; `data.tokenizer.name` with a char or BPE tokenizer trained one of its own, as if the
named one were in use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["callbacks.model_checkpoint.dirpath="], "callbacks.model_checkpoint.dirpath='' names"),
        (["callbacks.model_checkpoint.dirpath=null"], "model_checkpoint.dirpath=None names no"),
        (["paths.root_dir="], "paths.root_dir='' names no folder"),
        (["logger=csv", "logger.csv.save_dir="], "logger.csv.save_dir='' names no folder"),
        (["data.tokenizer.name=gpt2"], "data.tokenizer.name='gpt2' is read only with data."),
    ],
)
def test_a_setting_that_names_no_folder_is_one_line(
    tmp_path: Path, data_dir: Path, overrides: list[str], fragment: str
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *overrides, f"hydra.run.dir={run}")
    result = run_cli("train", *cli)
    assert_one_line_error(result, fragment)
    assert not list(run.rglob("*.ckpt")) and not (run / "metrics.json").exists()
