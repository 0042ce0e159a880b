"""Red team rev_clean26: a run folder whose name is too long for the file system was refused in
one line, but left the empty folders above it that the command had made (PROJECT_ROOT's)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


def test_a_run_folder_name_too_long_leaves_none_of_the_folders_it_made(tmp_path: Path) -> None:
    root = tmp_path / "new" / "project"
    cli = [o for o in tiny_cli(tmp_path, tmp_path / "data") if not o.startswith("paths.log_dir=")]
    result = run_cli("train", *cli, "task_name=" + "t" * 300, env={"PROJECT_ROOT": str(root)})
    assert_one_line_error(result, "cannot be created or written", "File name too long")
    assert not (tmp_path / "new").exists()


def test_a_run_folder_name_too_long_under_an_existing_log_folder_is_one_line(
    tmp_path: Path,
) -> None:
    """The usual case (review): `logs/` is there, and the stat of the name too long raised
    before the folder's refusal, a callback warning and Hydra's traceback."""
    logs = tmp_path / "logs"
    logs.mkdir()
    cli = tiny_cli(tmp_path, tmp_path / "data")  # paths.log_dir=tmp_path/logs
    result = run_cli("train", *cli, "task_name=" + "t" * 300)
    assert_one_line_error(result, "cannot be created or written", "File name too long")
    assert list(logs.iterdir()) == []
