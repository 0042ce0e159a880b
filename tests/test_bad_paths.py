"""Paths a run cannot use, and a list of paths it used to refuse: absolute and relative corpus
paths in one list are read (splits unchanged for lists of one kind); a run folder, log folder or
token cache folder that cannot be created is one `error:` line naming it, through the real CLI.

The tests run as root, for whom no permission bit forbids anything: the unwritable places are a
path under a regular file (no folder can be made there) and /proc (no file can be made there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource, assign_splits
from lmtrain.errors import LMTrainError
from lmtrain.utils.run_folder import claim_run_folder
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import load_splits, write_corpus


def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """corpus/a and corpus/b, four small documents each."""
    return write_corpus(tmp_path / "corpus" / "a"), write_corpus(tmp_path / "corpus" / "b", seed=1)


def relative_paths(source: TextFilesSource) -> list[str]:
    files, base = source.file_list()
    return [f.relative_to(base).as_posix() for f in files]


def test_absolute_and_relative_paths_in_one_list_are_read_with_the_same_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = two_folders(tmp_path)
    monkeypatch.chdir(tmp_path)
    relative = TextFilesSource(["corpus/a", "corpus/b"], val_fraction=0.3)
    absolute = TextFilesSource([str(a), str(b)], val_fraction=0.3)
    mixed = [
        TextFilesSource([str(a), "corpus/b"], val_fraction=0.3),
        TextFilesSource(["corpus/b/../a", str(b / "*.txt")], val_fraction=0.3),
        TextFilesSource(["~/" + os.path.relpath(a, Path.home()), "corpus/b"], val_fraction=0.3),
    ]
    # Lists of one kind keep the folder their relative paths start from, as before.
    assert relative.file_list()[1] == Path("corpus")
    assert absolute.file_list()[1] == tmp_path / "corpus"
    expected = relative_paths(relative)
    assert expected == relative_paths(absolute) and len(expected) == 8
    for source in mixed:
        files, base = source.file_list()
        assert base == tmp_path / "corpus" and all(f.is_absolute() for f in files)
        assert relative_paths(source) == expected
        assert assign_splits(files, base, 0.3) == assign_splits(*relative.file_list(), 0.3)
        assert load_splits(source) == load_splits(relative)


def test_a_run_on_absolute_and_relative_corpus_paths_trains(tmp_path: Path) -> None:
    a, b = two_folders(tmp_path)
    paths = f"data.source.path=[{a},{os.path.relpath(b, ROOT)}]"  # relative to the CLI's cwd
    run = tmp_path / "run"
    result = run_cli(
        "train",
        *tiny_cli(tmp_path, tmp_path / "data", paths, f"hydra.run.dir={run}", "logger=none"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    """A regular file: nothing can be created under it."""
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize("where", ["under_a_file", "under_proc"])
def test_a_run_folder_that_cannot_be_created_is_one_line(
    tmp_path: Path, a_file: Path, where: str
) -> None:
    run = a_file / "run" if where == "under_a_file" else Path("/proc/lmtrain-test/run")
    result = run_cli(
        "train", *tiny_cli(tmp_path, tmp_path / "data", f"hydra.run.dir={run}", "logger=none")
    )
    assert_one_line_error(result, f"hydra.run.dir={run}", "pass a writable hydra.run.dir")
    assert not (tmp_path / "data").exists()  # refused before any data was prepared


def test_a_log_folder_that_cannot_be_created_is_one_line(tmp_path: Path, a_file: Path) -> None:
    result = run_cli(
        "train", *tiny_cli(tmp_path, tmp_path / "data", f"paths.log_dir={a_file}/logs")
    )
    assert_one_line_error(result, f"hydra.run.dir={a_file}/logs/", "writable paths.log_dir")


def test_an_existing_folder_where_no_file_can_be_made_is_refused_as_a_run_folder() -> None:
    with pytest.raises(LMTrainError, match=r"hydra\.run\.dir=/proc cannot be created or written"):
        claim_run_folder("/proc", resuming=False, overwrite=False)


def test_a_cache_folder_that_cannot_be_created_is_one_line(tmp_path: Path, a_file: Path) -> None:
    cache = a_file / "cache"
    result = run_cli(
        "train", *tiny_cli(tmp_path, tmp_path / "data", f"data.cache_dir={cache}", "logger=none")
    )
    assert_one_line_error(result, f"data.cache_dir={cache}", "writable data.cache_dir")


def test_hydra_job_chdir_is_refused_before_any_data_is_prepared(tmp_path: Path) -> None:
    """lightning-hydra-template's habit: the job ran in its run folder, where the relative
    token cache resolved, so every run tokenized its corpus anew into its own folder (rev_sweep)."""
    result = run_cli(
        "train", *tiny_cli(tmp_path, tmp_path / "data", "hydra.job.chdir=true", "logger=none")
    )
    assert_one_line_error(result, "hydra.job.chdir=true runs the job in its run folder")
    assert not (tmp_path / "data").exists()


def test_adding_a_file_keeps_the_val_file_chosen_when_no_file_hashes_into_val(
    tmp_path: Path,
) -> None:
    # With no file under val_fraction by hash, the last file by name went to val: adding ch5
    # moved ch3, the old val text, into train (red team rt_data, 2026-12-04).
    book = tmp_path / "book"
    book.mkdir()
    for name in ("ch1", "ch2", "ch3"):  # path hashes 7837, 7949, 7565 of 10000: none below 1000
        (book / f"{name}.txt").write_text(f"{name} " * 200)

    def val_files() -> list[str]:
        files, base = TextFilesSource(str(book), val_fraction=0.1).file_list()
        splits = assign_splits(files, base, 0.1)
        return [f.name for f, split in zip(files, splits, strict=True) if split == "val"]

    assert val_files() == ["ch3.txt"]  # the lowest hash
    (book / "ch5.txt").write_text("ch5 " * 200)  # hash 8957: after ch3 by name and by hash
    assert val_files() == ["ch3.txt"]
