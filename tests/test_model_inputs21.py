"""Model settings that were applied silently, refused late, or misread (red team model21):

- `model.config.dtype=float16` trained a fresh model's weights in float16 under
  `trainer.precision=32-true` (exit 0); beside model.pretrained it was ignored;
- an unknown `model.config` key of a fresh model was refused only after the corpus was tokenized;
- `model.config.attn_implementation=eager` lost to model.attn_implementation without a word;
- from Python, a pretrained Llama folder was refused for the default model_type gpt2, a module
  wrapping a Llama recorded gpt2 (its checkpoint rebuilt a 124M GPT-2), and `strict=True` on a
  LoRA checkpoint was Lightning's ValueError traceback;
- a run folder or .ckpt as model.pretrained was refused as a data.tokenizer.name without files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

from lmtrain.models import CausalLMModule
from lmtrain.models.hf import build_causal_lm
from tests.helpers.assertions import assert_no_cache_left, assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.compose import TINY_LLAMA
from tests.helpers.corpora import one_file_corpus
from tests.helpers.pretrained import save_tiny_llama
from tests.test_lora import short_lora_run

GPT2_SIZES = {"n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 64}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("corpus21"))


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("llama21"), [corpus.read_text()])


def refused_before_data(
    tmp_path: Path, *overrides: str, fragments: tuple[str, ...], llama: bool = False
) -> str:
    """Run a tiny training (a GPT-2, or a Llama) with `overrides`; it must end in one error
    line holding every fragment, with no token cache written (refused by the config checks)."""
    cache = tmp_path / "cache"
    command = tiny_cli(tmp_path, cache, *overrides)
    if llama:  # TINY_LLAMA in place of tiny_cli's GPT-2 sizes
        command = [*TINY_LLAMA, *(o for o in command if not o.startswith("model.config.n_"))]
    result = run_cli("train", *command)
    line = assert_one_line_error(result, *fragments)
    assert_no_cache_left(cache)
    return line


@pytest.mark.parametrize(
    "override", ["+model.config.dtype=float16", "+model.config.torch_dtype=bfloat16"]
)
def test_dtype_in_model_config_is_refused_before_any_work(tmp_path: Path, override: str) -> None:
    key = override.split("=")[0].lstrip("+")
    refused_before_data(tmp_path, override, fragments=(key, "trainer.precision"))


def test_dtype_is_refused_from_python_fresh_and_pretrained(llama_folder: Path) -> None:
    line = refusal(lambda: CausalLMModule(config={**GPT2_SIZES, "dtype": "float16"}))
    assert "model.config.dtype='float16'" in line and "trainer.precision" in line
    beside = {"torch_dtype": "bfloat16"}
    line = refusal(lambda: CausalLMModule(pretrained=str(llama_folder), config=beside))
    assert "model.config.torch_dtype" in line and "trainer.precision" in line
    line = refusal(lambda: build_causal_lm("gpt2", {**GPT2_SIZES, "dtype": "bfloat16"}, None))
    assert "trainer.precision" in line


def test_unknown_key_of_a_fresh_model_is_refused_before_any_work(tmp_path: Path) -> None:
    refused_before_data(
        tmp_path,
        "+model.config.n_layers=8",
        fragments=("model.config.n_layers", "did you mean num_hidden_layers?"),
        llama=True,
    )


def test_gpt2_keys_on_a_llama_are_refused_from_python() -> None:
    line = refusal(lambda: CausalLMModule(model_type="llama", config=GPT2_SIZES))
    assert "model.config.n_layer" in line and "LlamaConfig" in line


@pytest.mark.parametrize("key", ["attn_implementation", "_attn_implementation"])
def test_attention_in_model_config_points_to_its_setting(tmp_path: Path, key: str) -> None:
    line = refused_before_data(
        tmp_path, f"+model.config.{key}=eager", fragments=("model.attn_implementation=eager",)
    )
    assert f"model.config.{key}='eager'" in line


def test_null_model_type_without_pretrained_is_refused(tmp_path: Path) -> None:
    refused_before_data(
        tmp_path, "model.model_type=null", fragments=("model.model_type", "model.pretrained")
    )


def test_a_run_folder_or_checkpoint_as_pretrained_names_the_export(
    tmp_path: Path, corpus: Path
) -> None:
    run = train_csv_run(tmp_path, tmp_path / "data", corpus, "run")
    checkpoint = run / "checkpoints" / "last.ckpt"
    for pretrained, what in ((run, "a run folder"), (checkpoint, "a checkpoint file")):
        cache = tmp_path / f"cache-{what[2:5]}"
        result = run_cli(
            "train",
            "experiment=finetune_gpt2",
            f"model.pretrained={pretrained}",
            f"data.source.path={corpus}",
            f"paths.data_dir={cache}",
            f"paths.log_dir={tmp_path / 'logs'}",
            "trainer=cpu",
        )
        line = assert_one_line_error(result, f"is {what} of lmtrain.train", "lmtrain.export")
        assert f"ckpt_path={checkpoint}" in line
        assert "data.tokenizer.name" not in line  # finetune_gpt2's is model.pretrained: one line
        assert_no_cache_left(cache)


def test_a_pretrained_folder_from_python_needs_no_model_type(llama_folder: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_folder)
    module = CausalLMModule(pretrained=llama_folder, tokenizer=tokenizer)
    assert type(module.model).__name__ == "LlamaForCausalLM"
    line = refusal(
        lambda: CausalLMModule(pretrained=llama_folder, model_type="gpt2", tokenizer=tokenizer)
    )
    assert "model.model_type='gpt2' is not the model_type" in line
    assert CausalLMModule(config=GPT2_SIZES).hparams.model_type == "gpt2"  # the default


def test_a_given_model_is_recorded_and_rebuilt(llama_folder: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(llama_folder)
    llama = AutoModelForCausalLM.from_pretrained(llama_folder).train()
    module = CausalLMModule(model=llama, tokenizer=tokenizer)
    assert module.hparams.model_type == "llama"
    assert module.hparams.config["num_key_value_heads"] == 2
    windows = torch.randint(0, len(tokenizer), (8, 17))
    trainer = Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(windows, batch_size=4))
    path = tmp_path / "wrapped.ckpt"
    trainer.save_checkpoint(path)
    loaded = CausalLMModule.load_from_checkpoint(path)
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    for (name, saved), (_, back) in zip(
        module.model.state_dict().items(), loaded.model.state_dict().items(), strict=True
    ):
        assert torch.equal(saved, back), name
    line = refusal(lambda: CausalLMModule(model=llama, model_type="gpt2", tokenizer=tokenizer))
    assert "model_type='gpt2'" in line and "'llama'" in line


def test_strict_loading_of_a_lora_checkpoint_is_one_line(
    tmp_path_factory: pytest.TempPathFactory, base: Path, new_text: Path, data_dir: Path
) -> None:
    checkpoint = short_lora_run(tmp_path_factory, base, new_text, data_dir)
    line = refusal(lambda: CausalLMModule.load_from_checkpoint(checkpoint, strict=True))
    assert "LoRA checkpoint" in line and "strict=False" in line
    CausalLMModule.load_from_checkpoint(checkpoint)  # the way it loads


def test_a_given_models_config_extras_are_not_settings(tmp_path: Path) -> None:
    """A config.json with keys its class does not know (GPT-2 hub configs hold `n_ctx` and
    `task_specific_params`) was refused by eval as misspelt model.config keys (rev_diff21)."""
    folder = tmp_path / "gpt2"
    GPT2Config(
        **GPT2_SIZES, vocab_size=64, n_ctx=64, task_specific_params={"x": {}}
    ).save_pretrained(folder)
    model = AutoModelForCausalLM.from_config(GPT2Config.from_pretrained(folder))
    assert model.config.to_dict()["n_ctx"] == 64  # kept as a plain attribute
    module = CausalLMModule(model=model)
    assert module.hparams.config["n_layer"] == 1
    assert "n_ctx" not in module.hparams.config
    assert "task_specific_params" not in module.hparams.config


def test_a_checkpoint_trained_with_a_dtype_key_still_loads(
    tmp_path: Path, llama_folder: Path
) -> None:
    """Trained before `model.config.dtype` was refused: load_from_checkpoint builds the module
    from the checkpoint's own arguments, whose weights are there already (rev_diff21)."""
    tokenizer = AutoTokenizer.from_pretrained(llama_folder)
    module = CausalLMModule(config=GPT2_SIZES, tokenizer=tokenizer)
    trainer = Trainer(
        max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    windows = torch.randint(0, len(tokenizer), (4, 9))
    trainer.fit(module, train_dataloaders=DataLoader(windows, batch_size=4))
    path = tmp_path / "old.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["hyper_parameters"]["config"]["dtype"] = "float32"  # as such a run saved it
    torch.save(checkpoint, path)
    loaded = CausalLMModule.load_from_checkpoint(path)
    assert "dtype" not in loaded.hparams.config
    assert loaded.model.transformer.wte.weight.dtype == torch.float32
    given = {**GPT2_SIZES, "dtype": "float16"}
    line = refusal(lambda: CausalLMModule(config=given, tokenizer=tokenizer))
    assert "trainer.precision" in line  # still refused from Python
