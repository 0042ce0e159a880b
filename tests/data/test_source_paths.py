"""Paths that used to read the wrong data silently: a `**` glob through a symlink loop, the same
file reached by two names, an empty path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmtrain.data.sources import TextFilesSource
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import load_splits


def test_a_glob_through_a_link_loop_reads_each_file_once_in_one_split(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"doc{i}.txt").write_text(f"document {i}\n" * 20)
    (corpus / "loop").symlink_to(corpus, target_is_directory=True)  # corpus/loop/loop/... = corpus
    (corpus / "alias.txt").symlink_to(corpus / "doc0.txt")
    source = TextFilesSource(str(corpus / "**" / "*.txt"), val_fraction=0.3)
    files, _ = source.file_list()
    assert len(files) == 6 and len({f.resolve() for f in files}) == 6
    train, val = load_splits(source)
    assert sorted(train + val) == sorted(f"document {i}\n" * 20 for i in range(6))
    assert not set(train) & set(val)


@pytest.mark.parametrize("path", ["", "  ", ["", "x.txt"]])
def test_an_empty_path_is_refused_not_the_working_directory(path: str | list[str]) -> None:
    with pytest.raises(LMTrainError, match=r"data\.source\.path=.* is empty: pass a file"):
        TextFilesSource(path).file_list()


@pytest.mark.parametrize("where", ["listed", "in a folder"])
def test_a_link_to_nothing_is_refused_naming_it(tmp_path: Path, where: str) -> None:
    """It was skipped without a word: a list of two files became one file split by characters."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "book.txt").write_text("a line of a book\n" * 50)
    dangling = tmp_path / "corpus" / "moved.txt"
    dangling.symlink_to(tmp_path / "gone.txt")
    path = [str(tmp_path / "corpus" / "book.txt"), str(dangling)]
    source = TextFilesSource(path if where == "listed" else str(tmp_path / "corpus"))
    with pytest.raises(LMTrainError) as err:
        source.file_list()
    assert str(err.value).startswith(
        f"{str(dangling)!r} under data.source.path={source.path!r} is a link to "
        f"{str(tmp_path / 'gone.txt')!r}, which does not exist: fix or remove it"
    )


def test_a_file_two_paths_reach_splits_under_the_first_and_the_overlap_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Adding a path after those there moves no file; one put before them may. Both say so."""
    inner = tmp_path / "corpus" / "sub"
    inner.mkdir(parents=True)
    for i in range(30):
        (inner / f"f{i}.txt").write_text(f"document {i}\n" * 5)
    alone = TextFilesSource(str(inner)).file_splits()
    assert TextFilesSource([str(inner), str(tmp_path / "corpus")]).file_splits() == alone
    before = TextFilesSource([str(tmp_path / "corpus"), str(inner)])
    assert before.file_splits() != alone  # under corpus/: sub/f0.txt, not f0.txt
    after, first = [r.getMessage() for r in caplog.records]
    assert f"30 files are under both {inner} and {tmp_path / 'corpus'}, and split" in after
    assert f"under both {tmp_path / 'corpus'} and {inner}, and split by their path under " in first


def test_a_fifo_in_a_corpus_folder_is_refused_not_read(tmp_path: Path) -> None:
    (tmp_path / "book.txt").write_text("a line of a book\n" * 50)
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block until a writer came
    with pytest.raises(LMTrainError) as err:
        TextFilesSource(str(tmp_path)).file_list()
    assert str(err.value).startswith(
        f"{str(tmp_path / 'pipe.txt')!r} under data.source.path={str(tmp_path)!r} is not a "
        "regular file (a FIFO, socket or device"
    )
