"""Splits that are not what was asked: val files that train reads too, and a val far smaller than
`data.source.val_fraction`, refused or told before anything is tokenized."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.sources import TextFilesSource
from lmtrain.errors import LMTrainError
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import DOCS, load_splits, write_corpus, write_jsonl

LOW_VAL = "only 0.4% of its text where data.source.val_fraction=0.1 asks for 10%"


def parts_and_val(folder: Path) -> Path:
    """The red team's folder: part-000/part-001.jsonl to train on, val-000.jsonl to validate on."""
    folder.mkdir(parents=True)
    write_jsonl(folder / "part-000.jsonl", DOCS[:15])
    write_jsonl(folder / "part-001.jsonl", DOCS[15:30])
    write_jsonl(folder / "val-000.jsonl", DOCS[30:])
    return folder


def test_a_train_glob_over_the_val_files_is_refused_before_tokenizing(tmp_path: Path) -> None:
    """`train: '*.jsonl'` also matched val-000.jsonl: val lay wholly inside train, silently."""
    folder = parts_and_val(tmp_path / "corpus")
    result = run_cli(
        "train",
        *tiny_cli(
            tmp_path,
            tmp_path / "data",
            "data=hf_dataset",
            "data.source.path=json",
            f"data.source.data_files={{train:'{folder}/*.jsonl',validation:'{folder}/val-*.jsonl'}}",
            "data.source.val_split=validation",
            f"data.source.cache_dir={tmp_path / 'hf'}",
            corpus=folder,
        ),
    )
    line = assert_one_line_error(
        result,
        "data.source.split='train' and data.source.val_split='validation' both read 1 file, "
        f"'{folder / 'val-000.jsonl'}'",
        "validation would measure the training data",
        f"leaves the 'validation' files out (e.g. '{folder / 'part-*.jsonl'}')",
    )
    assert "part-000" not in line.partition("(e.g.")[0]  # only the shared file is named
    assert not list((tmp_path / "data").rglob("*.bin"))  # refused before tokenizing

    # The glob the error suggests reads each file in one split.
    fixed = HFDatasetSource(
        "json",
        data_files={"train": f"{folder}/part-*.jsonl", "validation": f"{folder}/val-*.jsonl"},
        val_split="validation",
        cache_dir=str(tmp_path / "hf"),
    )
    assert load_splits(fixed) == (DOCS[:30], DOCS[30:])


def test_shared_files_relative_to_a_folder_are_counted_and_slices_still_pass(
    tmp_path: Path,
) -> None:
    """data_files relative to a folder given as data.source.path resolve the same way; three
    shared files name two and count the rest."""
    folder = parts_and_val(tmp_path / "corpus")
    for i in (1, 2):
        write_jsonl(folder / f"val-00{i}.jsonl", DOCS[30 + i :])
    source = HFDatasetSource(
        str(folder),
        data_files={"train": "*.jsonl", "validation": "val-*.jsonl"},
        val_split="validation",
        cache_dir=str(tmp_path / "hf"),
    )
    with pytest.raises(LMTrainError) as err:
        source.identity()  # the token cache's fingerprint: asked before any row is read
    message = str(err.value)
    assert "\n" not in message
    assert (
        f"both read 3 files, '{folder / 'val-000.jsonl'}', '{folder / 'val-001.jsonl'}' and 1 more"
        in message
    )

    # Two slices of one split read the same files by design: check_splits judges their rows.
    sliced = HFDatasetSource(
        str(folder),
        data_files={"train": "part-*.jsonl"},
        split="train[:50%]",
        val_split="train[50%:]",
        cache_dir=str(tmp_path / "hf"),
    )
    train, val = load_splits(sliced)
    assert train + val == DOCS[:30] and train and val


def test_a_file_that_datasets_puts_in_two_splits_is_refused(tmp_path: Path) -> None:
    """Given a folder alone, datasets splits its files by name: train-000.jsonl and
    validation-000.jsonl apart, but train_val-000.jsonl holds both keywords and joins both."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    write_jsonl(folder / "train-000.jsonl", DOCS[:30])
    write_jsonl(folder / "validation-000.jsonl", DOCS[30:])
    apart = HFDatasetSource(str(folder), val_split="validation", cache_dir=str(tmp_path / "hf"))
    assert load_splits(apart) == (DOCS[:30], DOCS[30:])

    write_jsonl(folder / "train_val-000.jsonl", DOCS[:5])
    both = HFDatasetSource(str(folder), val_split="validation", cache_dir=str(tmp_path / "hf2"))
    with pytest.raises(LMTrainError) as err:
        both.identity()
    assert str(err.value).startswith(
        "data.source.split='train' and data.source.val_split='validation' both read 1 file, "
        f"'{folder / 'train_val-000.jsonl'}' (datasets' file-name rules put them in splits "
        "'train' and 'validation'): validation would measure the training data; rename them"
    )


def big_jsonl(folder: Path, docs: int = 50) -> list[str]:
    """corpus.jsonl in `folder`: `docs` documents of `write_corpus` (about 6 KB each); it hashes
    to train beside README.md or extra.jsonl. Returns the documents."""
    texts = [p.read_text() for p in sorted(write_corpus(folder.parent / "docs", docs).iterdir())]
    folder.mkdir(parents=True)
    write_jsonl(folder / "corpus.jsonl", texts)
    return texts


def test_a_val_split_far_smaller_than_val_fraction_is_told(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A README beside one big .jsonl: the README was the whole val split, 0.1% of the tokens
    with val_fraction=0.1 (the default of data=text_files), and no word of it (red team)."""
    corpus = tmp_path / "corpus"
    big_jsonl(corpus)
    (corpus / "README.md").write_text("A line of notes about the corpus.\n" * 36)  # 1.2 KB
    assert TextFilesSource(str(corpus)).file_splits() == ["val", "train"]  # README.md, corpus
    sizes = {p.name: p.stat().st_size for p in corpus.iterdir()}
    share = f"{100 * sizes['README.md'] / sum(sizes.values()):.2g}%"
    assert float(share[:-1]) < 2.5  # under a quarter of val_fraction=0.1
    result = run_cli("train", *tiny_cli(tmp_path, tmp_path / "data", corpus=corpus))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    warnings = [line for line in output.splitlines() if "go to val" in line]
    assert len(warnings) == 1, output[-3000:]
    assert warnings[0].endswith(
        f"1 of the corpus's 2 files go to val, only {share} of its text where "
        "data.source.val_fraction=0.1 asks for 10%: files are split whole by a hash of their "
        "paths, so a few files of uneven sizes split unevenly and val measures little text; "
        "pass more files of similar sizes, or the big file alone (one .jsonl splits by "
        "document, one text file by characters)"
    )

    # A val file of about a tenth of the text is what was asked: no word.
    balanced = tmp_path / "balanced"
    texts = big_jsonl(balanced)
    write_jsonl(balanced / "extra.jsonl", texts[:5])
    source = TextFilesSource(str(balanced))
    assert source.file_splits() == ["train", "val"]  # corpus.jsonl, extra.jsonl
    with caplog.at_level(logging.WARNING, logger="lmtrain.data.split_balance"):
        train, val = load_splits(source)
    assert len(val) == 5 and len(train) == 50
    assert "go to val" not in caplog.text
