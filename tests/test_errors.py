"""Bad input: one line naming the bad value and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import hydra
import pytest
import torch
from lightning.fabric.strategies.fsdp import _distributed_checkpoint_save

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import (
    SHARDED_META_FILE,
    check_same_model,
    resolve_ckpt_path,
    resolve_model_path,
)
from lmtrain.models.module import CausalLMModule
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import fast_dev_run_cli, run_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.faults import drop_root_file_access
from tests.helpers.runs import tiny_train_config, train_tiny
from tests.helpers.sharded_runs import lightning_meta


@pytest.fixture
def quick(tmp_path: Path, play: Path) -> list[str]:
    """Overrides for a run that would be valid and fast: each test breaks one thing. The model
    is gpt2_tiny as shipped (4 layers, 128 wide); the play stands in for Tiny Shakespeare."""
    return [
        "data=shakespeare_char",
        f"data.source.path={play}",
        *run_place(tmp_path),
        "logger=none",
        "debug=fdr",
    ]


def run_place(tmp_path: Path) -> list[str]:
    """Where a run keeps its token cache and its run folder."""
    return [f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}"]


def char_tokens(play: Path) -> int:
    """The char vocabulary of `play`: one token per distinct character, plus end-of-text."""
    return len(set(play.read_text())) + 1


def test_missing_corpus(quick: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = run_cli("train", *quick, "data=text_files", f"data.source.path={missing}")
    assert_one_line_error(result, str(missing))


def test_empty_corpus(quick: list[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = run_cli("train", *quick, "data=text_files", f"data.source.path={empty}")
    assert_one_line_error(result, str(empty))


def test_missing_checkpoint(quick: list[str], tmp_path: Path) -> None:
    result = run_cli("train", *quick, f"ckpt_path={tmp_path / 'missing.ckpt'}")
    assert_one_line_error(result, "missing.ckpt", "does not exist")


def test_corrupt_checkpoint(quick: list[str], tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    for module in ("train", "eval"):
        result = run_cli(module, *run_place(tmp_path), f"ckpt_path={corrupt}")
        assert_one_line_error(result, "corrupt.ckpt", "not a readable checkpoint")


def test_resume_last_without_checkpoint(quick: list[str]) -> None:
    result = run_cli("train", *quick, "ckpt_path=last")
    assert_one_line_error(result, "ckpt_path=last", "last.ckpt", "hydra.run.dir")


def test_missing_pretrained_folder(quick: list[str], tmp_path: Path) -> None:
    folder = tmp_path / "no-such-model"
    result = run_cli("train", *quick, "model=pretrained", f"model.pretrained={folder}")
    assert_one_line_error(result, "model.pretrained", str(folder))


def test_block_size_longer_than_context(quick: list[str]) -> None:
    result = run_cli("train", *quick, "data.block_size=300", "model.config.n_positions=256")
    assert_one_line_error(result, "data.block_size=300", "256")


def test_unknown_override_key_is_hydras_one_message(quick: list[str]) -> None:
    result = run_cli("train", *quick, "data.no_such_key=1")
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert "Could not override 'data.no_such_key'" in result.stderr, result.stderr[-2000:]
    assert "+data.no_such_key=1" in result.stderr  # Hydra says how to add a new key instead


def test_global_batch_size_not_a_multiple_of_the_micro_batch(quick: list[str]) -> None:
    result = run_cli("train", *quick, "global_batch_size=30", "data.batch_size=4")
    assert_one_line_error(result, "global_batch_size=30", "data.batch_size (4)", "devices (1)")


def test_val_split_shorter_than_one_window(quick: list[str], tmp_path: Path) -> None:
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("To be, or not to be, that is the question.\n" * 10)  # val: 43 chars + eos
    result = run_cli("train", *quick, f"data.source.path={tiny}", "data.block_size=64")
    assert_one_line_error(result, "val split has 44 tokens", "data.block_size + 1 = 65")


def test_model_vocab_smaller_than_the_tokenizer(quick: list[str], play: Path) -> None:
    result = run_cli("train", *quick, "+model.config.vocab_size=20")
    assert_one_line_error(result, "model.config.vocab_size=20", f"{char_tokens(play)} tokens")


def test_pretrained_embedding_smaller_than_the_data_tokenizer(
    quick: list[str], tmp_path: Path, play: Path
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "small-vocab-model"
    config = GPT2Config(vocab_size=20, n_layer=1, n_head=2, n_embd=16, n_positions=64)
    GPT2LMHeadModel(config).save_pretrained(folder)
    result = run_cli("train", *quick, "model=pretrained", f"model.pretrained={folder}")
    tokens = f"the tokenizer has {char_tokens(play)} tokens"
    assert_one_line_error(result, tokens, "embeds only 20", str(folder))


def test_unreadable_corpus_file(tmp_path: Path) -> None:
    """Root reads files whatever their mode, through two capabilities; the run is started without
    them (still uid 0), so that chmod 000 holds for it as it does for any other user."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "readable.txt").write_text("some text\n" * 50)
    (corpus / "locked.txt").write_text("more text\n" * 50)
    (corpus / "locked.txt").chmod(0o000)
    result = run_cli(
        "train",
        *fast_dev_run_cli(corpus, tmp_path),
        preexec_fn=drop_root_file_access if os.geteuid() == 0 else None,
    )
    assert_one_line_error(result, str(corpus / "locked.txt"), "not readable", "chmod a+r")


def test_checkpoint_of_another_model_shape(quick: list[str], tmp_path: Path) -> None:
    corpus, steps = write_corpus(tmp_path / "corpus"), ["trainer.max_steps=2"]
    ckpt = train_tiny(tmp_path / "other", tmp_path / "data", corpus, *steps)
    result = run_cli("train", *quick, f"ckpt_path={ckpt}")  # 4 x 128 wide, char vocabulary
    assert_one_line_error(
        result,
        f"ckpt_path={str(ckpt)!r} holds another model",
        "n_embd=32 in the checkpoint but 128 here",
        "n_layer=2 in the checkpoint but 4 here",
        "vocab_size comes from data.tokenizer",
        "drop ckpt_path",
    )
    assert not (tmp_path / "run" / "checkpoints").exists()

    # The run's own settings build the same model, which passes the check (and would resume).
    module = tiny_module(tmp_path, corpus)
    check_same_model(ckpt, module.model.config)
    # Its own end (resuming a run killed in its final validation) or beyond; not below.
    check_same_model(ckpt, module.model.config, max_steps=2)
    with pytest.raises(LMTrainError, match=r"trainer.max_steps=1 is below step 2, where ckpt_pa"):
        check_same_model(ckpt, module.model.config, max_steps=1)
    # With resume=, the model comes from the run's saved config: another one there was edited.
    module.model.config.n_head = 4
    with pytest.raises(LMTrainError, match=r"resume=x: the run's .hydra/config.yaml describes an"):
        check_same_model(ckpt, module.model.config, resume="x")
    module.model.config.n_head = 2
    with pytest.raises(LMTrainError, match=r"n_head=2 in the checkpoint but 4 here"):
        module.model.config.n_head = 4
        check_same_model(ckpt, module.model.config)


def tiny_module(tmp_path: Path, corpus: Path) -> CausalLMModule:
    """The module `train_tiny` trains on `corpus`, built from the same config, untrained."""
    cfg = tiny_train_config(tmp_path / "again", tmp_path / "data", corpus)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    return hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")


def test_sharded_fsdp_checkpoint_folder_resumes_and_is_checked(tmp_path: Path) -> None:
    # Written as FSDPStrategy(state_dict_type="sharded") writes it: the tensors through
    # torch.distributed.checkpoint into last.ckpt/, the plain values in last.ckpt/meta.pt.
    module = tiny_module(tmp_path, write_corpus(tmp_path / "corpus"))
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints" / "last.ckpt"
    _distributed_checkpoint_save({"model": module.state_dict()}, folder)
    meta = {**lightning_meta(3), "pytorch-lightning_version": "2.6"}
    module.on_save_checkpoint(meta)
    torch.save(meta, folder / SHARDED_META_FILE)

    assert resolve_ckpt_path("last", run_dir) == str(folder)
    assert resolve_ckpt_path(str(folder), tmp_path) == str(folder)
    check_same_model(folder, module.model.config)
    module.model.config.n_layer = 3
    with pytest.raises(LMTrainError, match=r"n_layer=2 in the checkpoint but 3 here"):
        check_same_model(folder, module.model.config)
    # eval, generate and export need one file: they say how to make it.
    with pytest.raises(LMTrainError, match=r"python -m lmtrain.strategies consolidate"):
        resolve_model_path(str(folder), tmp_path)

    (folder / SHARDED_META_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(LMTrainError, match=r"meta.pt' is not a readable checkpoint"):
        resolve_ckpt_path("last", run_dir)
    (folder / SHARDED_META_FILE).unlink()
    with pytest.raises(LMTrainError, match=r"ckpt_path=last found no .*no run saved a checkpoint"):
        resolve_ckpt_path("last", run_dir)
    with pytest.raises(LMTrainError, match=r"is a folder without meta.pt"):
        resolve_ckpt_path(str(folder), tmp_path)
