"""Bad input: one line naming the bad value and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_cli


def assert_one_line_error(result, *fragments: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def quick(tmp_path: Path, shakespeare: Path) -> list[str]:
    """Overrides for a run that would be valid and fast: each test breaks one thing."""
    return [
        "data=shakespeare_char",
        f"data.source.path={shakespeare}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        "debug=fdr",
    ]


def test_missing_corpus(quick: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = run_cli("train", *quick, "data=text_files", f"data.source.path={missing}")
    assert_one_line_error(result, str(missing))


def test_empty_corpus(quick: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_cli("train", *quick, "data=text_files", f"data.source.path={empty}")
    assert_one_line_error(result, str(empty))


def test_missing_checkpoint(quick: list[str], tmp_path: Path) -> None:
    result = run_cli("train", *quick, f"ckpt_path={tmp_path / 'missing.ckpt'}")
    assert_one_line_error(result, "missing.ckpt", "does not exist")


def test_corrupt_checkpoint(quick: list[str], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    for module in ("train", "eval"):
        result = run_cli(module, *quick[2:4], f"ckpt_path={corrupt}")
        assert_one_line_error(result, "corrupt.ckpt", "not a readable checkpoint")


def test_resume_last_without_checkpoint(quick: list[str]) -> None:
    result = run_cli("train", *quick, "ckpt_path=last")
    assert_one_line_error(result, "ckpt_path=last", "last.ckpt", "hydra.run.dir")


def test_missing_pretrained_folder(quick: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "no-such-model"
    result = run_cli("train", *quick, "model=pretrained", f"model.pretrained={folder}")
    assert_one_line_error(result, "model.pretrained", str(folder))


def test_block_size_longer_than_context(quick: list[str]) -> None:
    result = run_cli("train", *quick, "data.block_size=300", "model.config.n_positions=256")
    assert_one_line_error(result, "data.block_size=300", "256")
