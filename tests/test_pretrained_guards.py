"""Two pretrained fine-tunes that trained on something else than asked, with exit code 0:

- a folder without tokenizer files (`model.save_pretrained(folder)` alone) loaded as an empty
  GPT-2 tokenizer (its eos token alone), so every document encoded to nothing and the run trained
  on separators; now refused, as is any tokenizer of special tokens alone;
- `model.config` and `model.model_type` beside `model.pretrained` were ignored while the saved
  config showed them; now the settings that keep the architecture (dropout) apply, and a shape
  or head change, an unknown key or another model_type is refused in one line.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from lmtrain.data.pretrained_tokenizer import pretrained_tokenizer
from lmtrain.data.tokenizers import check_tokenizer_config
from lmtrain.errors import LMTrainError
from lmtrain.models.distributed import pretrained_on_meta
from lmtrain.models.hf import build_causal_lm
from lmtrain.models.pretrained_overrides import check_pretrained_overrides
from lmtrain.utils.checks import Problems
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_RUN
from tests.helpers.corpora import one_file_corpus


@pytest.fixture(scope="module")
def weights_only(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `model.save_pretrained(folder)` alone writes: config.json, model.safetensors and
    generation_config.json (for a loaded model)."""
    folder = tmp_path_factory.mktemp("weights-only")
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(folder)
    names = {p.name for p in folder.iterdir()}
    assert names <= {"config.json", "model.safetensors", "generation_config.json"}, names
    return folder


def one_line(call: Callable[[], object], *fragments: str) -> str:
    with pytest.raises(LMTrainError) as err:
        call()
    text = str(err.value)
    assert "\n" not in text, text
    assert all(fragment in text for fragment in fragments), text
    return text


# -- A3: the tokenizer of a pretrained folder -----------------------------------------------------
def test_a_folder_without_tokenizer_files_is_refused_up_front_and_when_loaded(
    weights_only: Path,
) -> None:
    name = str(weights_only)
    one_line(
        lambda: pretrained_tokenizer(name),
        f"data.tokenizer.name={name!r} holds no tokenizer files",
        "pass data.tokenizer.name=<folder or hub id",
    )
    problems = Problems()
    check_tokenizer_config({"kind": "pretrained", "name": name}, problems)
    one_line(problems.raise_if_any, "holds no tokenizer files")


def test_a_tokenizer_of_special_tokens_alone_is_refused(weights_only: Path, tmp_path: Path) -> None:
    """tokenizer_config.json without a vocabulary: transformers builds a 1-token tokenizer."""
    folder = tmp_path / "config-only"
    shutil.copytree(weights_only, folder)
    settings = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    one_line(
        lambda: pretrained_tokenizer(str(folder)),
        "loads a tokenizer of 1 tokens, all special (<|endoftext|>)",
        "encodes to nothing",
    )


def test_a_complete_folder_still_loads(base: Path) -> None:
    tokenizer = pretrained_tokenizer(str(base))
    assert len(tokenizer) > 256 and len(tokenizer("hello world")["input_ids"]) > 1
    problems = Problems()
    check_tokenizer_config({"kind": "pretrained", "name": str(base)}, problems)
    problems.raise_if_any()


# -- A4: model.config and model.model_type with model.pretrained ----------------------------------
def test_dropout_settings_override_config_json(base: Path) -> None:
    """As from_pretrained(path, resid_pdrop=0.3): the modules get the new probabilities."""
    saved = AutoModelForCausalLM.from_pretrained(base).config
    assert (saved.resid_pdrop, saved.attn_pdrop) == (0.1, 0.1)
    config = {"resid_pdrop": 0.3, "attn_pdrop": 0.0, "n_layer": saved.n_layer}
    model = build_causal_lm("gpt2", config, str(base), vocab_size=10)
    block = model.transformer.h[0]
    assert (model.config.resid_pdrop, block.mlp.dropout.p, block.attn.attn_dropout.p) == (
        0.3,
        0.3,
        0.0,
    )
    assert model.training and model.config.n_layer == saved.n_layer
    plain = build_causal_lm(None, None, str(base), vocab_size=10)
    assert plain.transformer.h[0].mlp.dropout.p == 0.1
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in model.parameters())


def test_a_legacy_rope_theta_overrides_a_llamas_saved_rope_parameters(tmp_path: Path) -> None:
    """`model.config.rope_theta` over a Llama folder did nothing: transformers kept the folder's
    `rope_parameters`, while the run's config showed the new theta (red team rev_llama,
    2026-12-05). It applies now, keeping the folder's other rope settings."""
    folder = tmp_path / "llama"
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64,
        rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4},
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    model = build_causal_lm(None, {"rope_theta": 5e5}, str(folder), vocab_size=64)
    assert model.config.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}
    head = config.hidden_size // config.num_attention_heads
    expected = 1.0 / (5e5 ** (torch.arange(0, head, 2).float() / head)) / 2.0  # linear: / factor
    torch.testing.assert_close(model.model.rotary_emb.inv_freq, expected)
    # Over a folder of theta 5e5: the class's default theta, and a scaling that keeps the theta.
    other = tmp_path / "llama-5e5"
    model.save_pretrained(other)
    default = build_causal_lm(None, {"rope_theta": 1e4}, str(other), vocab_size=64)
    assert default.config.rope_parameters["rope_theta"] == 1e4
    scaling = {"rope_type": "linear", "factor": 4.0}
    scaled = build_causal_lm(None, {"rope_scaling": scaling}, str(other), vocab_size=64)
    assert scaled.config.rope_parameters == {
        "rope_type": "linear",
        "factor": 4.0,
        "rope_theta": 5e5,
    }
    assert scaling == {"rope_type": "linear", "factor": 4.0}  # the typed value is not edited


def test_ranks_that_build_on_meta_get_the_same_dropout(base: Path) -> None:
    """Under DDP, ranks other than 0 build model.pretrained's architecture on the meta device
    and receive the weights: they built it from config.json alone, so rank 0 trained with the
    overridden dropout and the others with the folder's."""
    meta = pretrained_on_meta(str(base), None, None, {"resid_pdrop": 0.3})
    assert meta.transformer.h[0].mlp.dropout.p == 0.3 and meta.config.resid_pdrop == 0.3
    assert pretrained_on_meta(str(base), None).transformer.h[0].mlp.dropout.p == 0.1


@pytest.mark.parametrize(
    ("model_type", "config", "fragments"),
    [
        (None, {"resid_pdrop": 0.3, "n_layer": 8}, ["model.config.n_layer=8", "n_layer=2"]),
        (None, {"vocab_size": 512}, ["model.config.vocab_size=512", "drop it"]),
        (None, {"tie_word_embeddings": False}, ["model.config.tie_word_embeddings=False"]),
        (None, {"n_head": 4}, ["model.config.n_head=4", "n_head=2"]),
        (None, {"n_layers": 8}, ["model.config.n_layers (did you mean n_layer?)", "GPT2Config"]),
        ("llama", None, ["model.model_type='llama'", "('gpt2' in its config.json)"]),
    ],
)
def test_settings_that_cannot_apply_to_the_weights_are_refused(
    base: Path, model_type: str | None, config: dict | None, fragments: list[str]
) -> None:
    """Up front (config.json alone) and when the model is built: the same line."""
    model = {"pretrained": str(base), "model_type": model_type, "config": config}
    up_front = one_line(lambda: check_pretrained_overrides(model), *fragments)
    built = one_line(lambda: build_causal_lm(model_type, config, str(base), vocab_size=10))
    assert built == up_front


def test_the_finetune_experiments_pass_and_read_nothing_without_overrides(
    base: Path, compose_cfg: Callable[..., DictConfig]
) -> None:
    """Their model node carries model_type and config as null; a hub id is not looked up."""
    for experiment in ("finetune_gpt2", "finetune_lora"):
        cfg = compose_cfg(f"experiment={experiment}", f"model.pretrained={base}", tiny=False)
        assert cfg.model.model_type is None and cfg.model.config is None
        check_pretrained_overrides(cfg.model)
    offline = {"pretrained": "no-such-org/no-such-model", "model_type": None, "config": None}
    check_pretrained_overrides(offline)
    with_gpt2 = compose_cfg(
        "experiment=finetune_gpt2", f"model.pretrained={base}", "model.model_type=gpt2", tiny=False
    )
    check_pretrained_overrides(with_gpt2.model)  # the folder's own type


def test_training_exits_with_one_line_for_either_mistake(
    base: Path, weights_only: Path, tmp_path: Path
) -> None:
    """Through lmtrain.train with experiment=finetune_gpt2, as the red team ran it (both were
    exit code 0): no tokenizer files, then a shape-changing model.config."""
    corpus = one_file_corpus(tmp_path / "corpus")
    common = [
        "experiment=finetune_gpt2",
        f"data.source.path={corpus}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=none",
        *TINY_RUN,
        "data.tokenizer.vocab_size=null",
    ]
    result = run_cli("train", *common, f"model.pretrained={weights_only}")
    assert_one_line_error(
        result, f"data.tokenizer.name={str(weights_only)!r} holds no tokenizer files"
    )
    result = run_cli(
        "train", *common, f"model.pretrained={base}", "model.config={resid_pdrop: 0.3, n_layer: 8}"
    )
    assert_one_line_error(result, "model.config.n_layer=8 would change the architecture")
    # A window past the weights' context: model.config may not raise it, so the advice cannot.
    result = run_cli("train", *common, f"model.pretrained={base}", "data.block_size=128")
    assert_one_line_error(
        result, "data.block_size=128 is longer than the model's context (64,",
        "lower data.block_size to at most 64, the context of model.pretrained",
    )  # fmt: skip
