"""`save_top_k` above 1 keeps that many checkpoints only if their names differ.

Red team: `callbacks.model_checkpoint.filename=best save_top_k=2` (or `'best-{epoch}'` in a
step-counted run) kept one file, always the latest save and not the best, exit 0: the shipped
callbacks config turns Lightning's version counter off (last.ckpt needs it off), so each save
replaced the one of the same name. Only `{step}` differs between two saves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

KEY = "callbacks.model_checkpoint"


@pytest.mark.parametrize(
    ("filename", "top_k", "kept"),
    [
        ("best", 2, "not the best 2"),
        ("best-{epoch}", -1, "not every save"),
        ("best-{val/loss:.4f}", 3, "not the best 3"),
    ],
)
def test_a_name_without_step_is_refused_when_more_than_one_is_kept(
    tmp_path: Path, data_dir: Path, filename: str, top_k: int, kept: str
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, f"{KEY}.filename='{filename}'", f"{KEY}.save_top_k={top_k}")
    assert out.returncode == 1
    assert_one_line_error(
        out,
        f"{KEY}.filename={filename!r} gives every kept checkpoint one name, so save_top_k="
        f"{top_k} keeps one file, the latest save, {kept}: add {{step}} to it",
    )
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


def test_names_with_step_keep_the_best_two(tmp_path: Path, data_dir: Path) -> None:
    """The refusal's advice works: two validations, two best checkpoints and last.ckpt. With the
    name the refusal names, the same run is refused first."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", f"{KEY}.save_top_k=2")
    assert run_cli("train", *cli, f"{KEY}.filename='best-{{epoch}}'").returncode == 1
    out = run_cli("train", *cli, f"{KEY}.filename='best-{{epoch}}-{{step}}'")
    assert out.returncode == 0, out.stderr[-3000:]
    names = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert names == ["best-0-2.ckpt", "best-0-4.ckpt", "last.ckpt"]
