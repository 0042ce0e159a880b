"""Two ways a run trained on the wrong tokens without a word (red team, 2026-12-03):

- A8: a corpus folder that holds `paths.log_dir` (or the run's own folder) read the runs' configs,
  logs and checkpoints as text; the next run failed on a .ckpt.
- A2: a `Source` subclass with an argument of its own, inheriting `settings()`, reused the cache
  of another value of that argument.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from lmtrain.data import TextDataModule
from lmtrain.data.cache_checks import FORMAT_VERSION
from lmtrain.data.corpus import Piece, Source
from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.data.sources import PythonStdlibSource, TextFilesSource
from lmtrain.data.token_cache import build_or_load, fingerprint, load_meta, unsettled_arguments
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import write_jsonl
from tests.helpers.runs import tiny_train_config

CHAR = {"kind": "char", "vocab_size": None, "name": None}
TEXT = "The Quick Brown Fox jumps over the lazy dog.\nAnd Then It Sleeps.\n"


def write_corpus(folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i in range(6):
        (folder / f"doc{i}.txt").write_text(TEXT * (20 + i), encoding="utf-8")
    return folder


def write_run_outputs(run: Path) -> None:
    """What a run leaves in its folder: configs, a log and a checkpoint (not UTF-8)."""
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text("model: {optimizer: {lr: 0.001}}\n")
    (run / "train.log").write_text("[2026-12-03 10:00:00,000][INFO] - Step 10: val/loss=4.02\n")
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04\x80\xff\xfe" * 64)


def check_only_the_corpus_was_read(dm: TextDataModule) -> None:
    dm.prepare_data()
    files = dm.source.file_list()[0]
    assert sorted(f.name for f in files) == [f"doc{i}.txt" for i in range(6)]
    meta = load_meta(dm.cache_path)
    assert meta["vocab_size"] == len(set(TEXT)) + 1  # + <|endoftext|>
    chars = sum(len(f.read_text()) for f in files)
    assert sum(meta["tokens"].values()) == chars + len(files)  # one end-of-text per document


def compose_char_run(corpus: Path, run_dir: Path, data_dir: Path) -> DictConfig:
    """The training config of a tiny char-level run on `corpus`, its run folder `run_dir`."""
    return tiny_train_config(
        run_dir, data_dir, corpus, "data.tokenizer.kind=char", "data.block_size=8"
    )


def test_a_log_dir_inside_the_corpus_folder_is_left_out(tmp_path: Path, caplog) -> None:
    """`data.source.path=/p paths.log_dir=/p/logs`: an earlier run's folder is not corpus text
    (it was: extra characters, a moved split, then `is not UTF-8 text` on its .ckpt)."""
    corpus = write_corpus(tmp_path / "p")
    write_run_outputs(corpus / "logs" / "train" / "runs" / "earlier")
    run_dir = corpus / "now"  # compose puts paths.log_dir beside it: corpus/logs
    cfg = compose_char_run(corpus, run_dir, tmp_path / "data")
    assert cfg.paths.log_dir == str(corpus / "logs")
    dm = instantiate(cfg.data)
    with caplog.at_level(logging.INFO):
        check_only_the_corpus_was_read(dm)
    assert f"under paths.log_dir={corpus / 'logs'} out of the corpus" in caplog.text


def test_the_run_folder_inside_the_corpus_is_left_out_when_not_under_log_dir(
    tmp_path: Path,
) -> None:
    """`hydra.run.dir=/p/out` with `data.source.path=/p`: the run's own .hydra/ (written before
    the data is prepared) and an earlier attempt's checkpoint in the same folder are not text."""
    corpus = write_corpus(tmp_path / "p")
    run_dir = corpus / "out"
    cfg = compose_char_run(corpus, run_dir, tmp_path / "data")
    with open_dict(cfg):
        cfg.paths.log_dir = str(tmp_path / "logs")  # elsewhere: only the run folder protects
    write_run_outputs(run_dir)
    check_only_the_corpus_was_read(instantiate(cfg.data))


def test_caches_runs_and_sweeps_of_other_settings_inside_the_corpus_are_left_out(
    tmp_path: Path, caplog
) -> None:
    """A cache built under another data.cache_dir, a run of another paths.log_dir and a sweep
    folder inside the corpus trained as text (a char cache's ids are valid UTF-8): 12 documents
    instead of 6, vocab 90 instead of 25 (red team rt_data, 2026-12-04)."""
    corpus = write_corpus(tmp_path / "p")
    settings = {"block_size": 8, "batch_size": 2, "log_dir": str(tmp_path / "logs")}
    TextDataModule(
        TextFilesSource(str(corpus)), CHAR, cache_dir=str(corpus / "old"), **settings
    ).prepare_data()  # a real token cache (and its lock) inside the corpus
    write_run_outputs(corpus / "runs" / "earlier")
    (corpus / "sweep").mkdir()
    (corpus / "sweep" / "multirun.yaml").write_text("hydra: {mode: MULTIRUN}\n")
    for path in (str(corpus), str(corpus / "**" / "*")):
        dm = TextDataModule(
            TextFilesSource(path), CHAR, cache_dir=str(tmp_path / "cache"), **settings
        )
        with caplog.at_level(logging.WARNING):
            check_only_the_corpus_was_read(dm)
        assert "Left out of the corpus what lmtrain wrote" in caplog.text
        for folder in ("old", "runs/earlier", "sweep"):
            assert str(corpus / folder) in caplog.text, folder
        caplog.clear()
    # The cache folder as the corpus: every file was left out, and the corpus path was blamed.
    same = TextDataModule(TextFilesSource(str(corpus)), CHAR, cache_dir=str(corpus), **settings)
    with pytest.raises(LMTrainError, match=r"holds no files but those under data\.cache_dir, "):
        same.prepare_data()


def test_files_named_by_a_hash_in_a_content_addressed_store_are_text(
    tmp_path: Path, caplog
) -> None:
    """A file named by 64 hex digits (a sha256 store, a hub cache's blobs/) was left out as a
    token cache's, with a warning that lmtrain wrote it; only a lock and a build folder so named
    are a cache's (red team rev_cache, 2026-12-05)."""
    store = tmp_path / "store"
    store.mkdir()
    for i in range(6):
        text = f"document {i}\n"
        (store / hashlib.sha256(text.encode()).hexdigest()).write_text(text)
    settings = {"block_size": 4, "batch_size": 2, "cache_dir": str(tmp_path / "cache")}
    dm = TextDataModule(TextFilesSource(str(store)), CHAR, **settings)
    with caplog.at_level(logging.WARNING):
        dm.prepare_data()
    assert "Left out of the corpus" not in caplog.text
    assert len(dm.source.file_list()[0]) == 6


def test_a_log_dir_outside_the_corpus_keeps_the_fingerprint(tmp_path: Path) -> None:
    """Leaving out a folder the corpus does not hold changes no file list: every cache built
    before stays valid."""
    corpus = write_corpus(tmp_path / "p")
    write_run_outputs(tmp_path / "logs" / "train" / "runs" / "earlier")
    settings = {"block_size": 8, "batch_size": 2, "cache_dir": str(tmp_path / "cache")}
    with_logs = TextDataModule(
        TextFilesSource(str(corpus)), CHAR, **settings, log_dir=str(tmp_path / "logs")
    )
    plain_source = TextFilesSource(str(corpus))
    tokenizer = TokenizerSettings.from_config(CHAR)
    assert fingerprint(with_logs.source, tokenizer) == fingerprint(plain_source, tokenizer)


class LowerText(TextFilesSource):
    """What a researcher writes: an argument of its own, `settings()` inherited."""

    def __init__(self, path: str, lowercase: bool = False, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.lowercase = lowercase

    def documents(self) -> Iterator[Piece]:
        for piece in super().documents():
            yield piece._replace(text=piece.text.lower()) if self.lowercase else piece


class LowerTextSettled(LowerText):
    """The same, with `settings()` of its own: its author covers the arguments."""

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "lowercase": self.lowercase}


def test_a_subclass_argument_gets_its_own_cache(tmp_path: Path) -> None:
    """`data.source.lowercase=false` then `=true`: the second run reused the mixed-case cache."""
    corpus = write_corpus(tmp_path / "p")
    tokenizer = TokenizerSettings.from_config(CHAR)
    target = f"{__name__}.LowerText"
    mixed = build_or_load(
        tmp_path / "cache",
        instantiate({"_target_": target, "path": str(corpus), "lowercase": False}),
        tokenizer,
        workers=1,
    )
    lower = build_or_load(
        tmp_path / "cache",
        instantiate({"_target_": target, "path": str(corpus), "lowercase": True}),
        tokenizer,
        workers=1,
    )
    assert lower != mixed, "lowercase=true reused the cache of lowercase=false"
    assert load_meta(mixed)["vocab_size"] == len(set(TEXT)) + 1
    assert load_meta(lower)["vocab_size"] == len(set(TEXT.lower())) + 1


def test_subclass_arguments_are_hashed_as_given_with_defaults(tmp_path: Path) -> None:
    corpus = str(write_corpus(tmp_path / "p"))
    tokenizer = TokenizerSettings.from_config(CHAR)
    default = LowerText(corpus)
    assert unsettled_arguments(default) == {"lowercase": False}  # val_fraction etc. are settings
    assert fingerprint(default, tokenizer) == fingerprint(LowerText(corpus, False), tokenizer)
    assert unsettled_arguments(LowerText(corpus, val_fraction=0.3, lowercase=True)) == {
        "lowercase": True
    }
    assert fingerprint(copy.deepcopy(default), tokenizer) == fingerprint(default, tokenizer)
    settled = LowerTextSettled(corpus, lowercase=True)
    assert unsettled_arguments(settled) == {}
    assert fingerprint(settled, tokenizer) == old_fingerprint(settled, tokenizer)


class Cleaner:
    """An object argument whose text shows its memory address, as most objects' do."""


def test_a_subclass_argument_reads_the_same_on_every_run(tmp_path: Path) -> None:
    """A function or object argument was hashed by its str(), with its memory address: every
    run rebuilt the cache under a new folder, without a word."""
    corpus = str(write_corpus(tmp_path / "p"))
    tokenizer = TokenizerSettings.from_config(CHAR)
    by_function = [fingerprint(LowerText(corpus, lowercase=str.lower), tokenizer) for _ in "ab"]
    assert by_function[0] == by_function[1]
    assert unsettled_arguments(LowerText(corpus, lowercase=str.lower)) == {
        "lowercase": "builtins.str.lower"
    }
    assert unsettled_arguments(LowerText(corpus, lowercase=write_corpus)) == {
        "lowercase": f"{write_corpus.__module__}.write_corpus"
    }
    with pytest.raises(LMTrainError, match=r"LowerText\(lowercase=\.\.\.\) is <.*Cleaner obj"):
        fingerprint(LowerText(corpus, lowercase=Cleaner()), tokenizer)


def test_a_subclass_whose_arguments_are_unknown_is_refused(tmp_path: Path) -> None:
    class Singleton(LowerText):
        def __new__(cls, *args: Any, **kwargs: Any) -> Singleton:
            return object.__new__(cls)  # Source.__new__ never sees the arguments

    source = Singleton(str(write_corpus(tmp_path / "p")), lowercase=True)
    with pytest.raises(LMTrainError, match=r"Singleton takes lowercase, which the settings\(\)"):
        fingerprint(source, TokenizerSettings.from_config(CHAR))


def old_fingerprint(source: Source, tokenizer: TokenizerSettings) -> str:
    """The fingerprint as it was before subclass arguments counted."""
    header = {
        "format_version": FORMAT_VERSION,
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "source_settings": source.settings(),
        "source_identity": source.identity(),
        "tokenizer": tokenizer.fingerprint(),
    }
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()


def test_shipped_sources_keep_their_fingerprints(tmp_path: Path) -> None:
    """Their settings() leave out arguments on purpose (a download folder, a timeout, streaming,
    datasets' cache): users' caches stay valid."""
    corpus = write_corpus(tmp_path / "p")
    records = write_jsonl(tmp_path / "records.jsonl", [f"document {i}" for i in range(20)])
    sources = [
        TextFilesSource(str(corpus), val_fraction=0.2),
        PythonStdlibSource(),
        ShakespeareSource(path=str(corpus / "doc0.txt"), download_dir=str(tmp_path), timeout_s=5),
        HFDatasetSource(str(records), streaming=True, cache_dir=str(tmp_path / "hf")),
    ]
    tokenizer = TokenizerSettings.from_config(CHAR)
    for source in sources:
        assert unsettled_arguments(source) == {}, type(source).__name__
        assert fingerprint(source, tokenizer) == old_fingerprint(source, tokenizer)
