"""data=hf_dataset on a local folder or glob reads every data file the user named, or says which
it would not; and never what lmtrain wrote there (a run's samples.txt joined the next run).

Found by red team data23 (findings 2 and 3): a folder of one .jsonl and two .txt notes trained on
the notes alone (datasets reads one format), and a `**/*.txt` glob over the run folders trained
each run on the samples of the runs before it, with a new token cache each time. Then review
diff23b (findings 2 and 3): a folder of records with a CHANGELOG.md was refused, and a
`data/*.jsonl` glob beside the token cache in data/cache got a new fingerprint.
"""

from __future__ import annotations

import gzip
import logging
import re
import shutil
from pathlib import Path

import pytest

from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.token_cache import fingerprint
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY
from tests.helpers.corpora import DOCS, load_splits, write_jsonl

CHAR = TokenizerSettings.from_config({"kind": "char", "vocab_size": None, "name": None})
NOTE = "Notes about the corpus, not meant to be read as its records.\n" * 20


def all_texts(source: HFDatasetSource) -> list[str]:
    """Every document the source gives, train and val, sorted."""
    train, val = load_splits(source)
    return sorted(train + val)


def hf_cli(root: Path, path: str, *overrides: str) -> list[str]:
    """A tiny char-level data=hf_dataset run on `path`, everything it writes under `root`."""
    return [
        *TINY,
        "data=hf_dataset",
        "data.tokenizer.kind=char",
        f"data.source.path={path}",
        "data.source.val_fraction=0.1",
        f"data.source.cache_dir={root / 'hf'}",
        f"paths.root_dir={root}",
        "logger=csv",
        *overrides,
    ]


def mixed_folder(folder: Path) -> Path:
    """One .jsonl of records and two .txt notes beside it: datasets keeps only the .txt files."""
    folder.mkdir(parents=True)
    write_jsonl(folder / "data.jsonl", DOCS)
    (folder / "README.txt").write_text(NOTE)
    (folder / "NOTES.txt").write_text(NOTE)
    return folder


def test_a_folder_of_two_formats_is_refused_naming_what_would_be_left_out(tmp_path: Path) -> None:
    corpus = mixed_folder(tmp_path / "corpus")
    out = run_cli("train", *hf_cli(tmp_path, str(corpus)))
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert "leave out data.jsonl" in errors[0]
    assert f"data.source.path='{corpus}/**/*.jsonl'" in errors[0]
    assert "data=text_files" in errors[0]
    assert not list((tmp_path / "data").glob("cache/*/train.bin"))  # nothing half-written
    # What the line says to do works: the jsonl alone.
    source = HFDatasetSource(str(corpus / "**" / "*.jsonl"), cache_dir=str(tmp_path / "hf"))
    assert all_texts(source) == sorted(DOCS)


def test_a_folder_refusal_names_a_few_files_and_counts_them(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(6):
        (corpus / f"part{i}.txt").write_text(NOTE)
    for i in range(5):
        write_jsonl(corpus / f"extra{i}.jsonl", DOCS[i::5])
    (corpus / "README.md").write_text("# A dataset card, which datasets reads as the card\n")
    with pytest.raises(LMTrainError) as err:
        HFDatasetSource(str(corpus), cache_dir=str(tmp_path / "hf")).identity()
    message = str(err.value)
    assert "\n" not in message
    assert "reads one (text): it would leave out 5 files: extra0.jsonl, extra1.jsonl, " in message
    assert "and 2 more" in message and "README.md" not in message


def test_a_folder_of_one_format_and_a_card_reads_them_all(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl(corpus / "a.jsonl", DOCS[:20])
    write_jsonl(corpus / "b.jsonl", DOCS[20:])
    (corpus / "README.md").write_text("# card\n")
    (corpus / "LICENSE").write_text("no data format: datasets never reads it\n")
    source = HFDatasetSource(str(corpus), cache_dir=str(tmp_path / "hf"))
    assert all_texts(source) == sorted(DOCS)


def test_a_glob_without_a_format_reads_its_one_format_or_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl(corpus / "a.jsonl", DOCS[:20])
    write_jsonl(corpus / "b.jsonl", DOCS[20:])
    (corpus / "LICENSE").write_text("no data format: left out\n")
    source = HFDatasetSource(str(corpus / "*"), cache_dir=str(tmp_path / "hf"))
    assert all_texts(source) == sorted(DOCS)
    (corpus / "notes.txt").write_text(NOTE)  # a side note: left out, in one info line
    source = HFDatasetSource(str(corpus / "*"), cache_dir=str(tmp_path / "hf"))
    assert all_texts(source) == sorted(DOCS)
    (corpus / "more.csv").write_text("text\n" + "".join(f'"{doc}"\n' for doc in DOCS[:5]))
    with pytest.raises(LMTrainError, match=r"reads one \(json\): it would leave out 2 files: more"):
        HFDatasetSource(str(corpus / "*"), cache_dir=str(tmp_path / "hf")).identity()


def test_a_glob_leaves_out_the_runs_beside_the_corpus_and_keeps_its_cache(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"p{i}.txt").write_text("".join(DOCS[i::4]))
    glob = str(tmp_path / "**" / "*.txt")
    outs = [run_cli("train", *hf_cli(tmp_path, glob)) for _ in range(2)]
    for out in outs:
        assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((tmp_path / "logs").rglob("samples.txt"))) == 2
    second = outs[1].stdout + outs[1].stderr
    assert re.search(r"Left 1 files under paths\.log_dir=\S+ out of the corpus", second)
    assert "Reusing token cache" in second, second[-3000:]  # the same corpus: the same cache
    assert len(list((tmp_path / "data" / "cache").glob("*/meta.json"))) == 1


def test_a_glob_leaves_out_another_log_dirs_run_and_its_fingerprint_follows_the_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"p{i}.txt").write_text(NOTE * (i + 1))
    glob = str(tmp_path / "**" / "*.txt")

    def source() -> HFDatasetSource:
        whole = {"sample_by": "document"}  # a file a row
        made = HFDatasetSource(glob, cache_dir=str(tmp_path / "hf"), load_kwargs=whole)
        made.leave_out({"paths.log_dir": tmp_path / "logs"})
        return made

    before = fingerprint(source(), CHAR)
    run = corpus / "old_logs" / "run1"  # a run of another paths.log_dir
    (run / ".hydra").mkdir(parents=True)
    (run / "samples.txt").write_text("a sample a model wrote\n")
    with caplog.at_level(logging.WARNING):
        found = source()
        texts = all_texts(found)
    assert texts == sorted(NOTE * (i + 1) for i in range(3))
    assert f"what lmtrain wrote under data.source.path={glob!r}" in caplog.text
    assert str(corpus / "old_logs") in caplog.text
    assert fingerprint(found, CHAR) == before  # left out, not a new corpus
    shutil.rmtree(corpus / "old_logs")
    (corpus / "p3.txt").write_text(NOTE)
    assert fingerprint(source(), CHAR) != before  # a new file is a new corpus


def test_plain_text_side_files_beside_records_are_logged_not_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(5):  # more record files than notes: datasets reads the folder as json
        write_jsonl(corpus / f"part{i}.jsonl", DOCS[i::5])
    for name in ("CHANGELOG.md", "HISTORY.md", "LICENSE.txt", "NOTES.txt"):
        (corpus / name).write_text(NOTE)
    (corpus / "old.txt.gz").write_bytes(gzip.compress(NOTE.encode()))
    with caplog.at_level(logging.INFO, logger="lmtrain.data.hf_files"):
        source = HFDatasetSource(str(corpus), cache_dir=str(tmp_path / "hf"))
        assert all_texts(source) == sorted(DOCS)
    lines = [r.getMessage() for r in caplog.records if "side files" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    assert "the json dataset leaves out plain-text side files" in lines[0]
    assert "5 files: " in lines[0] and "and 2 more" in lines[0]


def test_a_refusal_suggests_the_records_left_out_not_the_notes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):  # the most common format: datasets reads the folder as json
        write_jsonl(corpus / f"part{i}.jsonl", DOCS[i::3])
    (corpus / "extra.csv").write_text("text\n" + "".join(f'"{doc}"\n' for doc in DOCS[:5]))
    (corpus / "NOTES.txt").write_text(NOTE)
    (corpus / "TODO.txt").write_text(NOTE)
    out = run_cli("train", *hf_cli(tmp_path, str(corpus)))
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, out.stderr[-3000:]
    assert "reads one (json): it would leave out 3 files: extra.csv, " in errors[0]
    assert f"data.source.path='{corpus}/**/*.csv'" in errors[0]


def test_a_glob_that_cannot_reach_the_cache_beside_it_keeps_its_fingerprint(
    tmp_path: Path,
) -> None:
    corpus = tmp_path / "data"
    corpus.mkdir()
    write_jsonl(corpus / "train.jsonl", DOCS[:30])
    write_jsonl(corpus / "validation.jsonl", DOCS[30:])
    cache = corpus / "cache" / "abc"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text("{}")  # json, but not a *.jsonl at the top
    glob = str(corpus / "*.jsonl")
    alone = HFDatasetSource(glob, cache_dir=str(tmp_path / "hf"))
    beside = HFDatasetSource(glob, cache_dir=str(tmp_path / "hf"))
    beside.leave_out({"data.cache_dir": corpus / "cache"})
    assert beside.settings()["load"] == {"data_files": glob}  # as given, not a list
    assert fingerprint(beside, CHAR) == fingerprint(alone, CHAR)
    # A glob that does reach the cache reads the list of the files it keeps.
    reaching = HFDatasetSource(str(corpus / "**" / "*.json*"), cache_dir=str(tmp_path / "hf"))
    reaching.leave_out({"data.cache_dir": corpus / "cache"})
    assert reaching.settings()["load"]["data_files"] == [
        str(corpus / "train.jsonl"),
        str(corpus / "validation.jsonl"),
    ]
