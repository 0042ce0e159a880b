"""Fine-tuning a saved pretrained model (`experiment=finetune_gpt2`): the data uses the model's
tokenizer, the loss on new text falls, frozen parts stay put, and the result exports."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
)

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.train import train
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.pretrained import save_tiny_pretrained
from tests.helpers.runs import eval_tiny, export_tiny


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 and a byte-level BPE tokenizer, as `save_pretrained` writes them:
    what `from_pretrained("gpt2")` would find in the HF cache, 2 layers and 400 tokens small."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    texts = [p.read_text() for p in write_corpus(folder.parent / "pretrain", seed=5).iterdir()]
    return save_tiny_pretrained(folder, texts)


@pytest.fixture(scope="module")
def new_text(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("new-text") / "docs", seed=9)


def finetune(pretrained: Path, corpus: Path, run_dir: Path, data_dir: Path, *overrides: str):
    cfg = compose(
        "train",
        run_dir,
        data_dir,
        "experiment=finetune_gpt2",
        f"model.pretrained={pretrained}",
        f"data.source.path={corpus}",
        *TINY_RUN,  # the model is the saved one: no TINY_GPT2
        "model.optimizer.lr=3e-3",  # a random tiny model, not GPT-2: it may move fast
        "model.scheduler.num_warmup_steps=5",
        "trainer.max_steps=30",
        "trainer.val_check_interval=15",
        "logger=none",
        *overrides,
    )
    assert cfg.data.tokenizer.kind == "pretrained"
    assert cfg.data.tokenizer.name == str(pretrained)  # follows model.pretrained
    return train(cfg)


def test_finetuning_lowers_loss_on_new_text_and_exports(
    pretrained: Path, new_text: Path, tmp_path: Path, data_dir: Path
) -> None:
    data = ["data=text_files", f"data.source.path={new_text}", "data.block_size=32"]
    before = eval_tiny(pretrained, tmp_path / "before", data_dir, *data)["val/loss"]
    metrics = finetune(pretrained, new_text, tmp_path / "run", data_dir)
    assert metrics["val/loss"] < before - 1.0, (before, metrics)

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    folder = export_tiny(ckpt, tmp_path / "hf", data_dir)
    sample = (new_text / "doc0.txt").read_text()[:300]
    original = AutoTokenizer.from_pretrained(pretrained)
    assert AutoTokenizer.from_pretrained(folder)(sample).input_ids == original(sample).input_ids
    assert eval_tiny(folder, tmp_path / "after", data_dir, *data)["val/loss"] == pytest.approx(
        metrics["val/loss"], rel=1e-5
    )
    assert f"| Fine-tuned from | {pretrained} |" in (folder / "README.md").read_text()


def test_frozen_embeddings_and_first_block_stay_put(
    pretrained: Path, new_text: Path, tmp_path: Path, data_dir: Path
) -> None:
    finetune(
        pretrained,
        new_text,
        tmp_path / "run",
        data_dir,
        "model.freeze.embeddings=true",
        "model.freeze.first_n_blocks=1",
        "trainer.max_steps=5",
        "callbacks.text_samples=null",
    )
    start = AutoModelForCausalLM.from_pretrained(pretrained).state_dict()
    state = load_torch_file(tmp_path / "run" / "checkpoints" / "last.ckpt")["state_dict"]
    for name, before in start.items():
        frozen = name.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0.", "lm_"))
        moved = not torch.equal(state[f"model.{name}"], before)
        assert moved != frozen, name


def test_freeze_finds_llama_blocks_and_refuses_bad_counts() -> None:
    llama = {
        "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
        "hidden_size": 16, "intermediate_size": 32, "max_position_embeddings": 32,
        "vocab_size": 50, "tie_word_embeddings": True,
    }  # fmt: skip
    freeze = {"embeddings": True, "first_n_blocks": 1}
    module = CausalLMModule(model_type="llama", config=llama, freeze=freeze)
    for name, param in module.model.named_parameters():
        frozen = name.startswith(("model.embed_tokens", "model.layers.0.", "lm_head"))
        assert param.requires_grad != frozen, name
    with pytest.raises(LMTrainError, match=r"model.freeze.first_n_blocks=3 .* 2 blocks"):
        CausalLMModule(model_type="llama", config=llama, freeze={"first_n_blocks": 3})
    with pytest.raises(LMTrainError, match=r"model.freeze has unknown keys \['layers'\]"):
        CausalLMModule(model_type="llama", config=llama, freeze={"layers": 1})


def test_a_checkpoint_resumed_with_another_freeze_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """`ckpt_path=` with another model.freeze ended in torch's "loaded state dict contains a
    parameter group that doesn't match the size" once the data was prepared (`resume=` refused
    it already: FIXED_KEYS)."""
    steps = ("trainer.max_steps=2", "logger=csv", "callbacks.text_samples=null")
    run = tmp_path / "run"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *steps), f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    resumed = tmp_path / "resumed"
    cli = tiny_cli(
        tmp_path, data_dir, *steps, "trainer.max_steps=4", "model.freeze.embeddings=true"
    )
    out = run_cli("train", *cli, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
    assert_one_line_error(
        out,
        f"ckpt_path='{last}' was trained with model.freeze={{'embeddings': False, "
        "'first_n_blocks': 0}, not this run's {'embeddings': True, 'first_n_blocks': 0}",
        "resume with model.freeze as it was",
    )
    assert not (resumed / "checkpoints").exists()
