"""`lmtrain.eval` on a save_pretrained folder whose tokenizer has no eos token (red team gen27, 4).

The refusal named `data.tokenizer.name=<eval's own run folder>/tokenizer`, a key and a folder
the user never typed, with advice eval does not let them follow. It names the `ckpt_path` given,
and the fix it gives (add an eos token, resize the embeddings, save both) makes eval run.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from tests.helpers.assertions import one_error_line
from tests.helpers.cli import run_cli
from tests.helpers.runs import eval_tiny

TEXT = "the quick brown fox jumps over the lazy dog\n" * 40


def no_eos_folder(folder: Path) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """A tiny GPT-2 and a char-level fast tokenizer without an eos token, saved to `folder`
    with save_pretrained as a user would (no lmtrain run behind them)."""
    vocab = {char: i for i, char in enumerate(sorted(set(TEXT)))}
    backend = Tokenizer(models.BPE(vocab, []))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert tokenizer.eos_token is None
    sizes = {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 64}
    config = GPT2Config(vocab_size=len(vocab), bos_token_id=None, eos_token_id=None, **sizes)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def test_eval_refusal_names_ckpt_path_not_its_own_copy(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "noeos"
    no_eos_folder(folder)
    corpus = tmp_path / "other.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = run_cli(
        "eval",
        f"ckpt_path={folder}",
        f"paths.root_dir={tmp_path / 'root'}",
        f"paths.data_dir={data_dir}",
        "data=text_files",
        f"data.source.path={corpus}",
        "data.block_size=16",
    )
    assert out.returncode != 0
    line = one_error_line(out.stderr)
    assert f"ckpt_path={str(folder)!r}" in line
    assert "no eos token" in line and "add_special_tokens" in line
    assert "data.tokenizer" not in line and str(tmp_path / "root") not in line


def test_eval_runs_once_the_folder_follows_the_advice(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "fixed"
    model, tokenizer = no_eos_folder(folder)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    corpus = tmp_path / "other.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    metrics = eval_tiny(
        folder,
        tmp_path / "out",
        data_dir,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.block_size=16",
    )
    assert metrics["val/loss"] > 0
