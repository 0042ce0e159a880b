"""`lmtrain.eval`: checkpoint and export agree; bits per byte follows from loss and token counts."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
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
