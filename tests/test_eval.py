"""`lmtrain.eval`: checkpoint and export agree; bits per byte follows from loss and token counts."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli
from tests.helpers.compose import compose
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, export_tiny, model_from_checkpoint, train_tiny

VAL_FRACTION = 0.1  # text_files' default: one file splits by characters, the tail is val


def val_text(corpus: Path) -> str:
    text = corpus.read_text()
    return text[int(len(text) * (1 - VAL_FRACTION)) :]


def window_loss(ckpt: Path, text: str, block_size: int = 32) -> float:
    """The val/loss of `text` as a val split, computed here with the checkpoint's own model and
    tokenizer: its tokens and an end-of-text id, cut into back-to-back windows of block_size + 1
    tokens, the mean cross entropy over every target."""
    hf_model, tokenizer, _ = model_from_checkpoint(ckpt)
    stream = [*tokenizer(text, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    starts = range(0, (len(stream) - 1) // block_size * block_size, block_size)
    windows = torch.tensor([stream[i : i + block_size + 1] for i in starts])
    with torch.no_grad():
        logits = hf_model(windows[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()


@contextmanager
def edited(corpus: Path, text: str) -> Iterator[None]:
    """`corpus` holds `text` inside the block; then its old text, size and mtime again, so its
    token cache's fingerprint is the old one for the tests that follow."""
    old, stat = corpus.read_text(), corpus.stat()
    corpus.write_text(text)
    try:
        yield
    finally:
        corpus.write_text(old)
        os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval")
    corpus = one_file_corpus(root / "a", seed=0)
    ckpt = train_tiny(root / "run", data_dir, corpus)
    return {
        "ckpt": ckpt,
        "export": export_tiny(ckpt, root / "hf", data_dir),
        "corpus": corpus,
        "other": one_file_corpus(root / "b", seed=1),
    }


def other_data(corpus: Path) -> list[str]:
    """Overrides that evaluate on `corpus` (read with the model's tokenizer), 32-token windows."""
    return ["data=text_files", f"data.source.path={corpus}", "data.block_size=32"]


def test_checkpoint_and_export_give_the_same_metrics(
    model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    from_ckpt = eval_tiny(model["ckpt"], tmp_path / "ckpt", data_dir)
    from_export = eval_tiny(model["export"], tmp_path / "export", data_dir)
    for key in ("val/loss", "val/ppl", "val/bpb", "val/tokens", "val/bytes"):
        assert from_export[key] == pytest.approx(from_ckpt[key], rel=1e-6), key
    # The run's own final validation (whole val split, same weights) reported the same loss.
    run_metrics = json.loads((model["ckpt"].parent.parent / "metrics.json").read_text())
    assert from_ckpt["val/loss"] == pytest.approx(run_metrics["val/loss"], rel=1e-5)
    assert from_ckpt["val/ppl"] == pytest.approx(math.exp(from_ckpt["val/loss"]), rel=1e-5)


@pytest.mark.parametrize("corpus", ["corpus", "other"])
def test_bits_per_byte_is_loss_times_tokens_per_byte(
    corpus: str, model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """bpb = loss / ln 2 x tokens / bytes, with tokens per byte of the val text measured here
    with the exported tokenizer; `other` is a corpus the model never saw (data=...)."""
    data = [] if corpus == "corpus" else [*other_data(model[corpus])]
    metrics = eval_tiny(model["export"], tmp_path, data_dir, *data)
    loss, bpb = metrics["val/loss"], metrics["val/bpb"]
    assert bpb == pytest.approx(loss / math.log(2) * metrics["val/tokens"] / metrics["val/bytes"])

    text = val_text(model[corpus])
    tokenizer = AutoTokenizer.from_pretrained(model["export"])
    tokens_per_byte = len(tokenizer(text).input_ids) / len(text.encode("utf-8"))
    assert tokens_per_byte < 0.9  # BPE merges bytes: the ratio matters
    # Eval scores whole windows of 32 tokens, so a few tokens at the end of val are left out.
    assert len(text.encode("utf-8")) - 33 * 8 < metrics["val/bytes"] <= len(text.encode("utf-8"))
    assert bpb == pytest.approx(loss / math.log(2) * tokens_per_byte, rel=0.02)
    assert 0 < bpb < 8  # a model that learned anything beats 8 bits per ASCII byte


def test_folder_without_run_config_needs_data(
    model: dict[str, Path], tmp_path: Path, data_dir: Path, capsys
) -> None:
    plain = tmp_path / "plain"
    shutil.copytree(model["export"], plain)
    (plain / "lmtrain.json").unlink()
    with pytest.raises(SystemExit):
        eval_tiny(plain, tmp_path / "eval", data_dir)
    assert "holds no data config: pass data=<name>" in capsys.readouterr().err
    metrics = eval_tiny(plain, tmp_path / "eval", data_dir, *other_data(model["corpus"]))
    assert metrics["val/loss"] == pytest.approx(
        eval_tiny(model["export"], tmp_path / "export", data_dir)["val/loss"], rel=1e-6
    )


@pytest.fixture(scope="module")
def char_ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("eval-char")
    corpus = one_file_corpus(root / "a", seed=0)
    # Only its tokenizer matters here: two steps, one validation, no samples.
    short = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
    return train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char", *short)


def unseen_text(path: Path) -> Path:
    """ASCII text the char tokenizer covers, with 'Ü', 'ï' and 'ÿ' (never in its corpus) inside."""
    line = "The cat sat on the mat.\n"
    path.write_text(line * 300 + "Übermut ïs ÿes.\n" + line * 300)
    return path


def test_text_the_tokenizer_cannot_encode_is_one_line(char_ckpt: Path, tmp_path: Path) -> None:
    """Tokenized in worker processes (small chunks, 2 workers): one line naming the file and
    the characters, no traceback, and no cache folder, finished or half-written, left behind."""
    other = unseen_text(tmp_path / "poem.txt")
    cache = tmp_path / "data" / "cache"
    result = run_cli(
        "eval",
        f"ckpt_path={char_ckpt}",
        *other_data(other),
        f"paths.data_dir={tmp_path / 'data'}",
        "data.prepare_workers=2",
        "data.prepare_chunk_mb=0.002",
        "trainer.accelerator=cpu",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert_one_line_error(result, str(other), "'Ü', 'ï', 'ÿ'", "byte-level BPE")
    assert [p.name for p in cache.iterdir() if p.suffix != ".lock"] == []
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_training_on_text_the_tokenizer_cannot_encode_is_one_line(
    char_ckpt: Path, tmp_path: Path, capsys
) -> None:
    """The same check in lmtrain.train, with a pretrained (here: char) tokenizer."""
    from lmtrain.train import train

    _, tokenizer, _ = model_from_checkpoint(char_ckpt)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    cfg = compose(
        "train",
        tmp_path / "run",
        tmp_path / "data",
        *other_data(unseen_text(tmp_path / "poem.txt")),
        "data.tokenizer.kind=pretrained",
        f"data.tokenizer.name={tmp_path / 'tokenizer'}",
        "logger=none",
        "trainer.accelerator=cpu",
    )
    with pytest.raises(SystemExit) as exit_info:
        train(cfg)
    assert exit_info.value.code == 1
    line = one_error_line(capsys.readouterr().err)
    assert "'Ü', 'ï', 'ÿ'" in line and "cannot encode" in line, line
    assert [p.name for p in (tmp_path / "data" / "cache").iterdir() if p.suffix != ".lock"] == []


def test_changed_corpus_is_read_with_the_models_tokenizer(
    model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """Without data=, the corpus the model was trained on, edited since: its tokens come from the
    checkpoint's tokenizer, not from a BPE trained anew on today's text (other merges, other
    ids), so the loss is the one computed here with the checkpoint's model and tokenizer."""
    corpus = model["corpus"]
    changed = corpus.read_text().replace("b", "c")  # 'brown' and 'bird' become new words
    with edited(corpus, changed):
        metrics = eval_tiny(model["ckpt"], tmp_path, data_dir)
        wider = eval_tiny(model["ckpt"], tmp_path / "16", data_dir, "+data.block_size=16")
    text = changed[int(len(changed) * (1 - VAL_FRACTION)) :]
    assert metrics["val/loss"] == pytest.approx(window_loss(model["ckpt"], text), rel=1e-5)
    # A data setting alone (+data.<key>, as Hydra suggests) changes the model's own data config.
    assert wider["val/loss"] == pytest.approx(window_loss(model["ckpt"], text, 16), rel=1e-5)


def test_new_characters_in_the_models_own_corpus_are_one_line(
    char_ckpt: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    """A char model whose corpus gained characters after training: one line, no IndexError from
    ids past its embeddings; a data setting the run's config lacks is one line too."""
    corpus = Path(model_from_checkpoint(char_ckpt)[2]["data"]["source"]["path"])
    with edited(corpus, corpus.read_text() + "Übermut ïs ÿes.\n"), pytest.raises(SystemExit):
        eval_tiny(char_ckpt, tmp_path / "eval", data_dir)
    line = one_error_line(capsys.readouterr().err)
    assert "changed since the model was trained" in line and "'Ü', 'ï', 'ÿ'" in line, line
    assert not (tmp_path / "eval" / "metrics.json").exists()
    with pytest.raises(SystemExit):
        eval_tiny(char_ckpt, tmp_path / "eval", data_dir, "+data.block_sise=16")
    line = one_error_line(capsys.readouterr().err)
    assert "data.block_sise=16 is not a setting" in line and "block_size" in line, line


def test_a_typed_split_is_named_as_the_reason_for_a_new_cache(
    char_ckpt: Path, tmp_path: Path, data_dir: Path, caplog
) -> None:
    """`+data.source.val_fraction=...` makes another split, so another cache: the warning blamed
    a changed corpus or a removed cache, neither true (red team rev_evalgen, 2026-12-05)."""
    with caplog.at_level(logging.WARNING, logger="lmtrain.eval"):
        eval_tiny(char_ckpt, tmp_path / "eval", data_dir, "+data.source.val_fraction=0.2")
    assert (
        "(a data setting typed here made another split, the corpus changed since training, or "
        "its cache was removed)" in caplog.text
    )


def test_a_moved_training_corpus_names_the_setting_to_type(
    char_ckpt: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    """The corpus the run config names has moved: one line that says to type its new place
    with `+data.source.path=` (the eval config has no data key, so Hydra refuses it without
    `+`); typed so, eval reads it there with the model's own data settings."""
    corpus = Path(model_from_checkpoint(char_ckpt)[2]["data"]["source"]["path"])
    moved = corpus.rename(tmp_path / "moved.txt")
    try:
        with pytest.raises(SystemExit):
            eval_tiny(char_ckpt, tmp_path / "eval", data_dir)
        line = one_error_line(capsys.readouterr().err)
        assert repr(str(corpus)) in line and "+data.source.path=<path>" in line, line
        assert not (tmp_path / "eval" / "metrics.json").exists()
        found = eval_tiny(char_ckpt, tmp_path / "moved", data_dir, f"+data.source.path={moved}")
    finally:
        moved.rename(corpus)
    assert found == pytest.approx(eval_tiny(char_ckpt, tmp_path / "there", data_dir), rel=1e-6)
