"""data=hf_dataset: local jsonl and parquet datasets, streamed or not, give text_files' tokens."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lmtrain.data import TextDataModule
from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.sources import TextFilesSource
from lmtrain.errors import LMTrainError
from tests.helpers import ROOT
from tests.helpers.corpora import DOCS, load_splits, token_files, write_jsonl, write_parquet

BPE = {"kind": "bpe", "vocab_size": 400, "name": None, "train_sample_mb": 1}


def datamodule(source: object, cache_dir: Path) -> TextDataModule:
    """A data module whose token cache is prepared."""
    dm = TextDataModule(source, BPE, 8, 2, cache_dir=str(cache_dir), prepare_workers=2)
    dm.prepare_data()
    return dm


def test_jsonl_and_parquet_streamed_or_not_give_the_tokens_of_text_files(tmp_path: Path) -> None:
    jsonl = write_jsonl(tmp_path / "docs.jsonl", [*DOCS, ""])
    parquet = write_parquet(tmp_path / "docs.parquet", [*DOCS, ""])
    reference = datamodule(TextFilesSource(str(jsonl), val_fraction=0.25), tmp_path / "ref")
    expected = token_files(reference.cache_path)
    assert expected["train"] and expected["val"]
    for i, (path, streaming) in enumerate(
        [(jsonl, False), (jsonl, True), (parquet, False), (parquet, True)]
    ):
        source = HFDatasetSource(
            str(path), val_fraction=0.25, streaming=streaming, cache_dir=str(tmp_path / "hf")
        )
        dm = datamodule(source, tmp_path / f"cache{i}")
        assert token_files(dm.cache_path) == expected, (path.name, streaming)
        assert len(dm.tokenizer) == len(reference.tokenizer)


def test_streaming_and_cached_share_one_fingerprint_that_follows_the_files(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    cache = str(tmp_path / "hf")
    cached = HFDatasetSource(str(path), cache_dir=cache)
    streamed = HFDatasetSource(str(path), streaming=True, cache_dir=cache)
    assert cached.identity() == streamed.identity()
    assert cached.settings() == streamed.settings()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert HFDatasetSource(str(path), cache_dir=cache).identity() != cached.identity()
    assert cached.size_hint() == stat.st_size


def test_a_folder_with_a_validation_split(tmp_path: Path) -> None:
    folder = tmp_path / "dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", DOCS[:30])
    write_jsonl(folder / "validation.jsonl", DOCS[30:])
    source = HFDatasetSource(str(folder), val_split="validation", cache_dir=str(tmp_path / "hf"))
    assert load_splits(source) == (DOCS[:30], DOCS[30:])
    assert "val_split=validation" in source.describe()


def test_the_shipped_config_instantiates_with_a_local_glob(tmp_path: Path) -> None:
    for i in range(2):
        write_jsonl(tmp_path / f"part{i}.jsonl", DOCS[i::2])
    data = OmegaConf.load(ROOT / "configs" / "data" / "hf_dataset.yaml")
    cfg = OmegaConf.create({"paths": {"data_dir": str(tmp_path)}, "data": data})
    cfg.data.source.path = str(tmp_path / "part*.jsonl")
    cfg.data.source.cache_dir = str(tmp_path / "hf")
    cfg.data.source.val_fraction = 0.25
    source = instantiate(cfg.data.source)
    assert isinstance(source, HFDatasetSource) and source.load_args["path"] == "json"
    train, val = load_splits(source)
    assert sorted(train + val) == sorted(DOCS) and val


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "{tmp}/missing.jsonl"}, r"path=.*missing\.jsonl.*could not be loaded"),
        ({"path": "{tmp}/docs.jsonl", "text_column": "body"}, r"text_column='body'.*use one of"),
        ({"path": "{tmp}/docs.jsonl", "split": "test"}, r"data\.source\.split='test'"),
        ({"path": "{tmp}/docs.jsonl", "val_fraction": 0}, r"val_fraction=0 must be in \(0, 1\)"),
        # It blamed data.source.path, after the hundreds of extensions datasets knows.
        (
            {"path": "{tmp}", "data_files": "nothere.jsonl"},
            r"^data\.source\.data_files='nothere\.jsonl' \(Unable to find '.*nothere\.jsonl', "
            r"with data\.source\.path='.*'\): name files that are there, relative to[^\[]*$",
        ),
        # A packaged builder's data_files are not relative to its name.
        (
            {"path": "json", "data_files": "{tmp}/zz.jsonl"},
            r"\(Unable to find '.*zz\.jsonl', with data\.source\.path='json'\): name files "
            r"that are there$",
        ),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, kwargs: dict, message: str) -> None:
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "hello", "id": 1}) + "\n")
    kwargs = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(LMTrainError, match=message) as err:
        load_splits(HFDatasetSource(**kwargs, cache_dir=str(tmp_path / "hf")))
    assert "\n" not in str(err.value)
