"""Paths that used to read the wrong data silently: a `**` glob through a symlink loop, the same
file reached by two names, an empty path."""

from __future__ import annotations

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
