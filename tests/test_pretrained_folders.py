"""A pretrained folder is read as untrusted (`lmtrain.models.pretrained`): what does not fit its
config.json, custom code, a pickle, damaged files and an adapter export end in one line naming
the setting, and a folder saved in bf16 trains in float32 (`trainer.precision` decides).
Also the settings around it: LoRA's alpha, model.freeze.first_n_blocks, grouped-query heads,
and a data tokenizer that is not the pretrained model's."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from lmtrain.errors import LMTrainError
from lmtrain.models import lora
from lmtrain.models.hf import build_causal_lm
from lmtrain.models.model_folder import model_from_folder
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_RUN
from tests.helpers.corpora import one_file_corpus
from tests.helpers.pretrained import save_tiny_llama, tiny_bpe

# What torch's refusal of a pickle advises, and what no message of ours may pass on.
RELOAD_ADVICE = "weights_only` set to `False"


def load_for_training(folder: Path) -> torch.nn.Module:
    """`model.pretrained=<folder>` as training builds it (the tokenizer fits the embeddings)."""
    return build_causal_lm(None, None, str(folder), "sdpa", vocab_size=10)


def refusal(folder: Path, *fragments: str) -> str:
    """The one line training's loader refuses `folder` with, holding every fragment."""
    with pytest.raises(LMTrainError) as err:
        load_for_training(folder)
    text = str(err.value)
    assert "\n" not in text and f"model.pretrained={str(folder)!r}" in text, text
    assert RELOAD_ADVICE not in text and "LOAD REPORT" not in text, text
    assert all(fragment in text for fragment in fragments), text
    return text


def copy_with_config(base: Path, folder: Path, **changes: object) -> Path:
    """A copy of `base` whose config.json has `changes` (None removes the key)."""
    shutil.copytree(base, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    config = {key: value for key, value in config.items() if value is not None}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def payload_pickle(folder: Path, marker: Path) -> None:
    """Replace `folder`'s safetensors with a pytorch_model.bin whose pickle would touch
    `marker` (a blocked module, `posix.system`: worded differently by torch 2.13)."""
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()

    class Payload:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    torch.save({**state, "payload": Payload()}, folder / "pytorch_model.bin")


def test_a_bf16_folder_trains_in_float32_and_its_lora_base_keeps_bf16(
    base: Path, tmp_path: Path
) -> None:
    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(bf16)
    shutil.copy(base / "tokenizer.json", bf16)
    model = load_for_training(bf16)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    saved = load_file(bf16 / "model.safetensors")
    assert saved["transformer.wte.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(
        model.transformer.wte.weight, saved["transformer.wte.weight"].float()
    )
    # A LoRA base is never updated: it keeps its saved dtype (half of float32's memory), the
    # adapters train in float32, and eval and export read the base again the same way, so its
    # digest (dtypes included) matches.
    frozen = build_causal_lm(None, None, str(bf16), "sdpa", vocab_size=10, frozen_base=True)
    settings = lora.lora_settings("lora", {}, str(bf16))
    adapted = lora.add_adapters(frozen, settings, str(bf16))
    dtypes = {("lora_" in n, p.dtype) for n, p in adapted.named_parameters()}
    assert dtypes == {(False, torch.bfloat16), (True, torch.float32)}
    adapters = {k: v for k, v in adapted.state_dict().items() if "lora_" in k}
    rebuilt = lora.model_from_checkpoint(adapted.lmtrain_lora, adapters, tmp_path / "x.ckpt")
    assert {("lora_" in n, p.dtype) for n, p in rebuilt.named_parameters()} == dtypes


def test_weights_that_do_not_fit_config_json_are_refused(base: Path, tmp_path: Path) -> None:
    # One more layer in config.json than in the weights: block 2 would train from random values.
    deeper = copy_with_config(base, tmp_path / "deeper", n_layer=3)
    refusal(deeper, "do not fit its config.json (missing: transformer.h.2.", "and 9 more")
    # Another architecture's weights: the whole model would be a fresh random one.
    llama = save_tiny_llama(tmp_path / "llama", ["some text to train a tokenizer on"] * 20)
    other = tmp_path / "other"
    shutil.copytree(base, other)
    shutil.copy(llama / "model.safetensors", other / "model.safetensors")
    refusal(other, "missing: lm_head.weight, transformer.", "unexpected: model.embed_tokens")
    # Other widths: transformers raised after a 60-line table, through Hydra's multi-line error.
    wider = copy_with_config(base, tmp_path / "wider", n_embd=64)
    refusal(wider, "of other shapes: transformer.")
    # The same check for a folder given to eval, generate and export.
    with pytest.raises(LMTrainError, match=r"ckpt_path=.*deeper.*\(missing: transformer\.h\.2\."):
        model_from_folder(deeper)


def test_whole_gpt2_and_llama_folders_load_as_saved(base: Path, tmp_path: Path) -> None:
    """No false refusal: weights tied to the embeddings (absent from the file), buffers that
    transformers skips (GPT-2's attn.bias mask, Llama's rotary inv_freq) or older versions
    saved (attn.masked_bias), and a file without the `transformer.` prefix."""
    llama = save_tiny_llama(tmp_path / "llama", ["some text to train a tokenizer on"] * 20)
    assert load_for_training(llama).config.tie_word_embeddings
    old = tmp_path / "old-gpt2"
    shutil.copytree(base, old)
    state = {
        k.removeprefix("transformer."): v for k, v in load_file(base / "model.safetensors").items()
    }
    for block in range(2):
        state[f"h.{block}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
        state[f"h.{block}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(state, old / "model.safetensors", metadata={"format": "pt"})
    model = load_for_training(old)
    torch.testing.assert_close(model.transformer.h[1].ln_2.weight, state["h.1.ln_2.weight"])
    assert model.lm_head.weight is model.transformer.wte.weight
    rotary = tmp_path / "llama-inv-freq"
    shutil.copytree(llama, rotary)
    state = load_file(llama / "model.safetensors")
    state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
    save_file(state, rotary / "model.safetensors", metadata={"format": "pt"})
    load_for_training(rotary)


def test_a_folder_with_custom_code_is_refused_without_running_it(
    base: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    folder = copy_with_config(
        base,
        tmp_path / "custom",
        model_type="evilgpt",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    )
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "class EvilConfig(GPT2Config):\n    model_type = 'evilgpt'\n"
        "class EvilModel(GPT2LMHeadModel):\n    config_class = EvilConfig\n"
    )
    refusal(folder, "needs the custom code it holds", "lmtrain never runs")
    with pytest.raises(LMTrainError, match=r"ckpt_path=.*custom.* needs the custom code"):
        model_from_folder(folder)
    assert not marker.exists()


def test_damaged_or_pickled_weights_are_one_line_naming_model_pretrained(
    base: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    pickled = tmp_path / "pickled"
    shutil.copytree(base, pickled)
    payload_pickle(pickled, marker)
    refusal(pickled, "holds pickled objects", "unsupported GLOBAL posix.system", "could run code")
    with pytest.raises(LMTrainError, match=r"pickled' holds pickled objects") as err:
        model_from_folder(pickled)  # eval, generate, export
    assert RELOAD_ADVICE not in str(err.value)
    assert not marker.exists()
    cut = tmp_path / "cut"
    shutil.copytree(base, cut)
    (cut / "model.safetensors").write_bytes((base / "model.safetensors").read_bytes()[:5000])
    refusal(cut, "unreadable weights (model.safetensors: ", "copy or download the whole folder")
    listed = tmp_path / "listed"
    shutil.copytree(base, listed)
    (listed / "config.json").write_text("[1, 2]")
    refusal(listed, "could not be loaded (", "model_type")
    refusal(copy_with_config(base, tmp_path / "untyped", model_type=None), "model_type")


def test_an_adapter_export_as_model_pretrained_asks_for_merge(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    refusal(adapters, "is a LoRA adapter export", "lmtrain.export merge=true", "model/peft=lora")


@pytest.mark.parametrize("alpha", [float("inf"), float("nan")])
def test_lora_alpha_must_be_finite(alpha: float) -> None:
    with pytest.raises(LMTrainError, match=r"model.peft.alpha=(inf|nan): pass a finite number"):
        lora.lora_settings({"alpha": alpha}, {}, "gpt2")


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        # `true` froze one block (blocks[:True]); 1.5 was a TypeError from the model's build.
        ("model.freeze.first_n_blocks=true", "model.freeze.first_n_blocks=True is not a whole"),
        ("model.freeze.first_n_blocks=1.5", "model.freeze.first_n_blocks=1.5 is not a whole"),
        # Query heads that do not group over the key/value heads: a traceback at the first step.
        (
            "model.config.num_attention_heads=4 model.config.num_key_value_heads=3",
            "model.config.num_attention_heads=4 does not split into "
            "model.config.num_key_value_heads=3 heads",
        ),
    ],
)
def test_freeze_and_head_group_settings_are_checked(
    compose_cfg, override: str, fragment: str
) -> None:
    llama = ["model=llama_tiny", "model.config.hidden_size=48"] if "heads" in override else []
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(*llama, *override.split(" "), tiny=False))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_data_tokenizer_that_is_not_the_models_is_warned_about(
    compose_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    pretrained = ["model=pretrained", "model.pretrained=some-org/some-model", "data=text_files"]
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.model_checks"):
        check_train_config(
            compose_cfg(*pretrained, "data.source.path=/x", "data.tokenizer.kind=char", tiny=False)
        )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "data.tokenizer.kind=char is not model.pretrained=some-org/some-model's own" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtrain.utils.model_checks"):
        check_train_config(
            compose_cfg(
                *pretrained,
                "data.source.path=/x",
                "data.tokenizer.kind=pretrained",
                "data.tokenizer.name=some-org/some-model",
                tiny=False,
            )
        )
    assert not caplog.records


def test_a_local_tokenizer_folder_of_another_vocabulary_is_warned_about(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Red team: model.pretrained=<folder> fine-tuned on data.tokenizer.name=<a WordPiece of
    300 tokens> with nothing said, its ids on unrelated embedding rows. The model's own
    tokenizer, saved again with a pad token added, is no other vocabulary."""
    texts = ["the quick brown fox jumps over the lazy dog"] * 20
    model_folder = tmp_path / "model"
    tiny_bpe(texts, 300).save_pretrained(model_folder)
    other, same = tmp_path / "other", tmp_path / "same"
    tiny_bpe(["a wholly different text, with other words in it"] * 20, 280).save_pretrained(other)
    padded = tiny_bpe(texts, 300)
    padded.add_special_tokens({"pad_token": "<pad>"})
    padded.save_pretrained(same)
    settings = ["model=pretrained", f"model.pretrained={model_folder}", "data=text_files"]
    for folder, warned in ((other, True), (same, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="lmtrain.utils.model_checks"):
            tokenizer = ["data.tokenizer.kind=pretrained", f"data.tokenizer.name={folder}"]
            cfg = compose_cfg(*settings, "data.source.path=/x", *tokenizer, tiny=False)
            check_train_config(cfg)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        expected = f"data.tokenizer.name={folder} is another vocabulary than model.pretrained="
        assert any(w.startswith(expected) for w in warnings) == warned, warnings


def test_training_on_unfitting_or_pickled_folders_exits_with_one_line(
    base: Path, tmp_path: Path
) -> None:
    """Through lmtrain.train: no Hydra "Error in call to target", no table, exit code non-zero
    (a folder of another architecture's weights trained random weights with exit code 0)."""
    corpus = one_file_corpus(tmp_path / "corpus")
    deeper = copy_with_config(base, tmp_path / "deeper", n_layer=3)
    marker = tmp_path / "ran"
    pickled = tmp_path / "pickled"
    shutil.copytree(base, pickled)
    payload_pickle(pickled, marker)
    for folder, fragment in ((deeper, "missing: transformer.h.2."), (pickled, "could run code")):
        result = run_cli(
            "train",
            "model=pretrained",
            f"model.pretrained={folder}",
            "data=text_files",
            f"data.source.path={corpus}",
            "data.tokenizer.kind=pretrained",
            f"data.tokenizer.name={base}",
            f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path / 'logs'}",
            "logger=none",
            *TINY_RUN,
        )
        line = assert_one_line_error(result, f"model.pretrained={str(folder)!r}", fragment)
        assert RELOAD_ADVICE not in result.stderr + result.stdout, line
        assert "Error in call to target" not in result.stderr and "LOAD REPORT" not in result.stderr
    assert not marker.exists()
