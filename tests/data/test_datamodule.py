"""Token cache and TextDataModule: cached once, rebuilt when damaged, windows that line up."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning import seed_everything

from lmtrain.data import TextDataModule
from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.data.sources import PythonStdlibSource, TextFilesSource
from lmtrain.data.token_cache import token_dtype
from lmtrain.errors import LMTrainError
from tests.helpers.corpora import load_splits, load_tokens

BPE = {"kind": "bpe", "vocab_size": 300, "name": None}
CHAR = {"kind": "char", "vocab_size": None, "name": None}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Twelve small documents; with val_fraction 0.25 the hash puts some in val."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(12):
        lines = (f"def f{i}_{j}(x):\n    return x * {j}  # note {i}\n" for j in range(20))
        (folder / f"doc{i:02}.py").write_text("".join(lines), encoding="utf-8")
    return folder


def make_dm(corpus: Path, tokenizer: dict = BPE, **kwargs) -> TextDataModule:
    settings = {"block_size": 16, "batch_size": 4, "cache_dir": str(corpus.parent / "cache")}
    source = TextFilesSource(str(corpus), val_fraction=0.25)
    return TextDataModule(source=source, tokenizer=tokenizer, **(settings | kwargs))


def test_cache_layout_dtype_and_eos_after_each_document(corpus: Path) -> None:
    dm = make_dm(corpus, tokenizer=CHAR)
    dm.prepare_data()
    meta = json.loads((dm.cache_path / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == len(dm.tokenizer)
    assert dm.cache_path.parent == corpus.parent / "cache"
    names = sorted(p.name for p in dm.cache_path.parent.iterdir())
    assert names == [dm.cache_path.name, f"{dm.cache_path.name}.lock"]
    train_docs, val_docs = load_splits(dm.source)
    assert meta["documents"] == {"train": len(train_docs), "val": len(val_docs)}
    for split, docs in (("train", train_docs), ("val", val_docs)):
        tokens = load_tokens(dm.cache_path, split)
        assert tokens.dtype == np.uint16 and tokens.size == meta["tokens"][split]
        eos_positions = np.flatnonzero(tokens == dm.tokenizer.eos_token_id)
        assert len(eos_positions) == len(docs) and eos_positions[-1] == tokens.size - 1
        text = dm.tokenizer.decode(tokens.tolist())
        assert text == "".join(doc + dm.tokenizer.eos_token for doc in docs)
    assert token_dtype(65_536) == np.uint16 and token_dtype(65_537) == np.uint32


def test_second_prepare_reuses_the_cache(corpus: Path) -> None:
    first = make_dm(corpus)
    first.prepare_data()
    first.prepare_data()
    meta_file = first.cache_path / "meta.json"
    stamp = meta_file.stat().st_mtime_ns
    second = make_dm(corpus)
    second.prepare_data()
    assert second.cache_path == first.cache_path and meta_file.stat().st_mtime_ns == stamp
    assert len(second.tokenizer) == len(first.tokenizer)
    (corpus / "doc00.py").write_text("changed text\n")
    third = make_dm(corpus)
    third.prepare_data()
    assert third.cache_path != first.cache_path


@pytest.mark.parametrize("damage", ["truncate train.bin", "delete meta.json", "delete tokenizer"])
def test_a_damaged_cache_is_rebuilt_with_a_warning(
    corpus: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    dm = make_dm(corpus)
    dm.prepare_data()
    folder = dm.cache_path
    good = (folder / "train.bin").read_bytes()
    if damage == "truncate train.bin":
        (folder / "train.bin").write_bytes(good[:-7])
    elif damage == "delete meta.json":
        (folder / "meta.json").unlink()
    else:
        (folder / "tokenizer" / "tokenizer.json").unlink()
    with caplog.at_level(logging.WARNING, logger="lmtrain.data.token_cache"):
        rebuilt = make_dm(corpus)
        rebuilt.prepare_data()
        rebuilt.setup("fit")
    assert rebuilt.cache_path == folder and "damaged" in caplog.text
    assert (folder / "train.bin").read_bytes() == good
    assert not list(folder.parent.glob("*.tmp-*"))


def test_train_windows_are_shifted_pairs_of_the_token_stream(corpus: Path) -> None:
    dm = make_dm(corpus, block_size=16)
    dm.prepare_data()
    dm.setup("fit")
    tokens = load_tokens(dm.cache_path, "train")
    ds = dm.train_dataset
    assert ds is not None and len(ds) == tokens.size - 16
    for i in (0, 5, len(ds) - 1):
        item = ds[i]
        assert item.dtype == torch.int64 and item.shape == (17,)
        x, y = item[:-1], item[1:]
        assert torch.equal(y, torch.from_numpy(tokens[i + 1 : i + 17].astype(np.int64)))
        assert torch.equal(x[1:], y[:-1])
    loader = dm.train_dataloader()
    assert len(loader) == (tokens.size // 16) // 4
    seed_everything(7)
    first = next(iter(dm.train_dataloader()))
    seed_everything(7)
    assert torch.equal(first, next(iter(dm.train_dataloader())))
    assert first.shape == (4, 17) and first.dtype == torch.int64


def test_val_windows_tile_the_split_in_order(corpus: Path) -> None:
    dm = make_dm(corpus, block_size=16)
    dm.prepare_data()
    dm.setup("validate")
    tokens = torch.from_numpy(load_tokens(dm.cache_path, "val").astype(np.int64))
    batches = list(dm.val_dataloader())
    windows = torch.cat(batches)
    assert len(windows) == (tokens.numel() - 1) // 16 and windows.shape[1] == 17
    targets = windows[:, 1:].reshape(-1)
    assert torch.equal(targets, tokens[1 : 1 + targets.numel()])
    assert tokens.numel() - 1 - targets.numel() < 16


def test_too_small_splits_and_bad_sizes_are_one_line_errors(corpus: Path) -> None:
    dm = make_dm(corpus, tokenizer=CHAR, block_size=100_000)
    dm.prepare_data()
    # No val_fraction makes a window of each split: its hint was to move val_fraction (rev_sweep).
    with pytest.raises(LMTrainError, match=r"has \d+ tokens in all, too few for a window") as e:
        dm.setup("fit")
    assert str(e.value).endswith("pass more text, or lower data.block_size"), e.value
    single = corpus.parent / "one.txt"
    single.write_text("x" * 950 + "y" * 50)
    source = TextFilesSource(str(single), val_fraction=0.05)
    dm = TextDataModule(source, CHAR, 64, 4, cache_dir=str(corpus.parent / "cache"))
    dm.prepare_data()
    with pytest.raises(LMTrainError, match=r"val split has 51 tokens.*raising data\.source\.val_f"):
        dm.setup("fit")
    for key in ("block_size", "batch_size", "prepare_workers"):
        with pytest.raises(LMTrainError, match=rf"data\.{key}=0 must be at least 1"):
            make_dm(corpus, **{key: 0})
    with pytest.raises(LMTrainError, match=r"data\.prepare_chunk_mb=0 must be positive"):
        make_dm(corpus, prepare_chunk_mb=0)
    with pytest.raises(LMTrainError, match=r"data\.tokenizer\.train_sample_mb=0 must be positive"):
        make_dm(corpus, tokenizer=BPE | {"train_sample_mb": 0})
    # The misspelt key named, not every key listed (`+data.tokenizer.vocabsize=300`).
    with pytest.raises(
        LMTrainError,
        match=r"^data\.tokenizer\.vocabsize is not a tokenizer setting: did you mean vocab_size\?$",
    ):
        make_dm(corpus, tokenizer={"kind": "bpe", "vocabsize": 300})
    with pytest.raises(LMTrainError, match=r"^data\.tokenizer has no kind: pass data\.tokenizer"):
        make_dm(corpus, tokenizer={"vocab_size": 300})


def test_shakespeare_char_has_a_token_per_character_and_a_tail_val_split(
    tmp_path: Path, play: Path
) -> None:
    """Tiny Shakespeare has 65 characters (66 tokens); the play, written here, has its own."""
    dm = TextDataModule(ShakespeareSource(path=str(play)), CHAR, 64, 12, cache_dir=str(tmp_path))
    dm.prepare_data()
    text = play.read_text(encoding="utf-8")
    characters = len(set(text))
    assert len(dm.tokenizer) == characters + 1 and dm.tokenizer.eos_token_id == characters
    val = load_tokens(dm.cache_path, "val")
    assert dm.tokenizer.decode(val[:-1].tolist()) == text[int(len(text) * 0.9) :]
    assert val.size == len(text) - int(len(text) * 0.9) + 1


def test_python_stdlib_with_bpe_end_to_end(tmp_path: Path) -> None:
    dm = TextDataModule(
        PythonStdlibSource(),
        BPE | {"vocab_size": 1024, "train_sample_mb": 2},
        128,
        16,
        cache_dir=str(tmp_path),
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.tokenizer) == 1024 and "stdlib" in dm.source_description
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (16, 129)
    assert "def " in dm.tokenizer.decode(load_tokens(dm.cache_path, "val")[:5000].tolist())
    assert next(iter(dm.val_dataloader())).shape == (16, 129)


@pytest.mark.parametrize("name", ["python_stdlib", "text_files", "shakespeare_char"])
def test_shipped_configs_instantiate(compose_cfg, data_dir: Path, corpus: Path, name: str) -> None:
    """Composed as the CLI composes them (each loads its `_base` first)."""
    path = [f"data.source.path={corpus}"] if name == "text_files" else []
    cfg = compose_cfg(f"data={name}", *path, tiny=False)
    dm = instantiate(cfg.data)
    assert isinstance(dm, TextDataModule) and dm.cache_dir == data_dir / "cache"
    assert dm.tokenizer_settings.kind == ("char" if name == "shakespeare_char" else "bpe")
