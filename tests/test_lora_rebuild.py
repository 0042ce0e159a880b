"""LoRA checkpoints and peft adapter folders rebuild the model that trained, or are refused in one
line (red team rev_peft12, 2026-12-05).

The base was read from its config.json, so a run's `model.config` overrides were dropped by eval,
generate and export (other numbers, exit code 0; a Llama trained on a longer context could not be
evaluated), and an edited config.json was taken. An adapter folder's weights were loaded as they
were: adapters missing or narrowed, options lmtrain never trains with, even a base weight added
to the file. A LoRA entry edited by hand, a bad adapter_config.json and a regular expression that
matches a LayerNorm ended in tracebacks; a resume refused the same targets in another order.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

from lmtrain.errors import LMTrainError
from lmtrain.eval import evaluate
from lmtrain.models import CausalLMModule
from lmtrain.models.checkpoint import load_model
from lmtrain.models.lora_folder import load_adapter_folder
from lmtrain.train import train
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers import pretrained
from tests.helpers.assertions import one_error_line
from tests.helpers.compose import compose
from tests.helpers.pretrained import save_tiny_llama
from tests.helpers.runs import eval_tiny, export_tiny
from tests.test_lora import finetune_config, short_lora_run

SHORT = ["trainer.max_steps=6", "trainer.val_check_interval=3"]
# GPT-2's layer norm, far from config.json's 1e-5: the numbers show which one the model has.
EPSILON = "model.config={layer_norm_epsilon: 100.0}"


@pytest.fixture(scope="module")
def lora_run(
    base: Path, new_text: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Path:
    """A short LoRA run with the default settings; its last.ckpt."""
    return short_lora_run(tmp_path_factory, base, new_text, data_dir)


@pytest.fixture(scope="module")
def adapters(lora_run: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """lora_run's adapter folder (export merge=false)."""
    return export_tiny(
        lora_run, tmp_path_factory.mktemp("adapters") / "out", data_dir, "merge=false"
    )


def logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.arange(24).remainder(model.config.vocab_size)[None]
    with torch.inference_mode():
        return model(input_ids=ids).logits


def test_a_lora_run_with_model_config_overrides_is_rebuilt_as_it_trained(
    new_text: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path, tmp_path: Path
) -> None:
    """`model.config` overrides live in the checkpoint's hf_config: eval gave 5.8602 for a run
    that validated at 5.8664 (config.json's epsilon). The adapter folder records the config in
    its lmtrain.json; an edited config.json changes neither; a folder exported before that
    record loads, as before, with config.json's."""
    base = pretrained.pretrained_base(tmp_path_factory)  # its own: its config.json is edited
    run_dir = tmp_path / "run"
    metrics = train(finetune_config(base, new_text, run_dir, data_dir, *SHORT, EPSILON))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluated = eval_tiny(ckpt, tmp_path / "eval", data_dir)
    assert evaluated["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)
    expected = logits(load_model(ckpt).model)
    folder = export_tiny(ckpt, tmp_path / "adapters", data_dir, "merge=false")
    meta = json.loads((folder / "lmtrain.json").read_text())
    assert meta["info"]["lora"]["hf_config"]["layer_norm_epsilon"] == 100.0
    torch.testing.assert_close(logits(load_model(folder).model), expected, rtol=0, atol=0)
    merged = export_tiny(ckpt, tmp_path / "merged", data_dir)
    assert AutoConfig.from_pretrained(merged).layer_norm_epsilon == 100.0

    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "layer_norm_epsilon": 0.5}))
    again = eval_tiny(ckpt, tmp_path / "eval-edited", data_dir)
    assert again["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)
    torch.testing.assert_close(logits(load_model(folder).model), expected, rtol=0, atol=0)
    del meta["info"]["lora"]["hf_config"]
    (folder / "lmtrain.json").write_text(json.dumps(meta))
    assert load_model(folder).model.config.layer_norm_epsilon == 0.5


def test_a_lora_llama_trained_on_a_longer_context_is_evaluated(
    new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    """max_position_embeddings=128 over config.json's 64: eval refused data.block_size=128 as
    longer than the model's context."""
    texts = [p.read_text() for p in new_text.iterdir()]
    llama = save_tiny_llama(tmp_path / "llama", texts)
    longer = ["model.config={max_position_embeddings: 128}", "data.block_size=128"]
    longer += ["data.batch_size=2"]
    run = finetune_config(llama, new_text, tmp_path / "run", data_dir, *SHORT, *longer)
    metrics = train(run)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    evaluated = eval_tiny(ckpt, tmp_path / "eval", data_dir)
    assert evaluated["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-6)
    assert load_model(ckpt).model.config.max_position_embeddings == 128


def variant(
    adapters: Path,
    folder: Path,
    config: Callable[[dict[str, Any]], None] | None = None,
    weights: Callable[[dict[str, torch.Tensor]], None] | None = None,
    meta: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A copy of the adapter folder with its adapter_config.json, adapter weights or
    lmtrain.json edited in place by the functions given."""
    shutil.copytree(adapters, folder)
    for name, edit in (("adapter_config.json", config), ("lmtrain.json", meta)):
        if edit is not None:
            values = json.loads((folder / name).read_text())
            edit(values)
            (folder / name).write_text(json.dumps(values))
    if weights is not None:
        state = load_file(folder / "adapter_model.safetensors")
        weights(state)
        save_file(state, folder / "adapter_model.safetensors")
    return folder


def refused(folder: Path, *fragments: str) -> None:
    with pytest.raises(LMTrainError) as caught:
        load_model(folder)
    line = str(caught.value)
    assert "\n" not in line and "Traceback" not in line, line
    for fragment in fragments:
        assert fragment in line, line


def test_an_adapter_folder_must_hold_its_adapters_and_nothing_else(
    adapters: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each of these evaluated with exit code 0 and other numbers; the added ln_f weight went
    into the base after its digest was checked."""
    load_model(adapters)  # the folder as exported loads
    prefix = "base_model.model.transformer."
    describes = "does not hold the adapters its adapter_config.json describes"
    again = "export the checkpoint again with lmtrain.export merge=false"

    def no_lora_b(state: dict[str, torch.Tensor]) -> None:
        for key in [k for k in state if ".lora_B." in k]:
            del state[key]

    folder = variant(adapters, tmp_path / "no-b", weights=no_lora_b)
    refused(folder, describes, f"missing ['{prefix}h.0.attn.c_attn.lora_B.weight'", again)

    def base_weight(state: dict[str, torch.Tensor]) -> None:
        state[f"{prefix}ln_f.weight"] = torch.zeros(32)

    folder = variant(adapters, tmp_path / "ln_f", weights=base_weight)
    refused(folder, describes, f"missing [], unexpected ['{prefix}ln_f.weight']")
    cfg = compose("eval", tmp_path / "eval", data_dir, f"ckpt_path={folder}")
    with pytest.raises(SystemExit):
        evaluate(cfg)
    assert describes in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "eval" / "metrics.json").exists()

    def narrowed(config: dict[str, Any]) -> None:
        config["target_modules"] = ["c_attn"]

    folder = variant(adapters, tmp_path / "narrowed", config=narrowed)
    refused(folder, "its target_modules is ['c_attn'], but lmtrain.json records [")

    def unrecorded(meta: dict[str, Any]) -> None:
        del meta["info"]["lora"]

    folder = variant(adapters, tmp_path / "narrowed-alone", config=narrowed, meta=unrecorded)
    refused(folder, describes, f"unexpected ['{prefix}h.0.attn.c_proj.lora_A.weight'")

    def rank_4(config: dict[str, Any]) -> None:
        config["r"] = 4

    folder = variant(adapters, tmp_path / "r4", config=rank_4)
    refused(folder, "unusable adapter_config.json (its r is 4, but lmtrain.json records 8")
    folder = variant(adapters, tmp_path / "r4-alone", config=rank_4, meta=unrecorded)
    refused(folder, "holds adapters that do not fit its adapter_config.json (size mismatch for")

    for key, value in [("use_dora", True), ("layers_to_transform", [0]), ("bias", "all")]:
        folder = variant(
            adapters, tmp_path / key, config=lambda c, k=key, v=value: c.update({k: v})
        )
        refused(folder, f"unusable adapter_config.json (its {key} is {value!r}, an option lmtrain")


def test_an_adapter_on_the_output_layer_loads_with_its_copy_of_the_base_layer(
    tmp_path: Path,
) -> None:
    """peft saves the base weight of an adapted embedding or output layer beside its adapters
    (an untied Llama's lm_head): the folder loads as peft loads it, and a copy that is not the
    base's weight is refused like any other weight that is not an adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    base = tmp_path / "untied"
    config = LlamaConfig(
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, hidden_size=16,
        intermediate_size=32, vocab_size=64, tie_word_embeddings=False,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(base)
    settings = LoraConfig(r=2, target_modules=["q_proj", "lm_head"], task_type="CAUSAL_LM")
    adapted = get_peft_model(AutoModelForCausalLM.from_pretrained(base), settings)
    with torch.no_grad():
        adapted.base_model.model.lm_head.lora_B["default"].weight.fill_(0.1)
    adapted.save_pretrained(tmp_path / "adapters")
    copy = "base_model.model.lm_head.base_layer.weight"
    assert copy in load_file(tmp_path / "adapters" / "adapter_model.safetensors")

    ids = torch.arange(12)[None]
    loaded = load_adapter_folder(tmp_path / "adapters")
    as_peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), tmp_path / "adapters"
    )
    with torch.inference_mode():
        assert torch.equal(loaded(input_ids=ids).logits, as_peft.eval()(input_ids=ids).logits)

    def other_copy(state: dict[str, torch.Tensor]) -> None:
        state[copy] = torch.zeros_like(state[copy])

    folder = variant(tmp_path / "adapters", tmp_path / "other", weights=other_copy)
    with pytest.raises(LMTrainError, match=rf"missing \[\], unexpected \['{copy}'\]"):
        load_adapter_folder(folder)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("peft_type", "PROMPT_TUNING", "its peft_type is 'PROMPT_TUNING', not 'LORA'"),
        ("lora_alpha", "x", "its lora_alpha is 'x', not a finite number > 0"),
        ("r", 0, "its r is 0, not an integer >= 1"),
        ("lora_dropout", 1.5, "its lora_dropout is 1.5, not a probability in [0, 1)"),
        ("target_modules", 7, "its target_modules is 7, not a list of module names"),
        ("base_model_name_or_path", None, "its base_model_name_or_path is None, not a folder"),
    ],
)
def test_a_bad_adapter_config_is_one_line(
    adapters: Path, tmp_path: Path, key: str, value: Any, why: str
) -> None:
    """PROMPT_TUNING and lora_alpha="x" were TypeErrors in peft."""
    folder = variant(adapters, tmp_path / "bad", config=lambda config: config.update({key: value}))
    refused(folder, f"has an unusable adapter_config.json ({why}", "lmtrain.export")


def crafted(lora_run: Path, path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """lora_run's checkpoint with the LoRA entry `edit` makes of its own; its tensors, and so
    its checksum, unchanged."""
    checkpoint = load_torch_file(lora_run)
    checkpoint["lmtrain"]["lora"] = edit(dict(checkpoint["lmtrain"]["lora"]))
    torch.save(checkpoint, path)
    return path


def with_settings(**values: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda entry: {**entry, "settings": {**entry["settings"], **values}}


def test_a_crafted_lora_entry_is_one_line(
    lora_run: Path,
    base: Path,
    new_text: Path,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A KeyError, AttributeError (eval) or TypeError (resume), peft's ValueError for a
    LayerNorm target and torch's RuntimeError for adapters of another rank."""
    written = "pass a checkpoint written by lmtrain.train"

    def without_digest(entry: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in entry.items() if key != "base_digest"}

    no_digest = crafted(lora_run, tmp_path / "no-digest.ckpt", without_digest)
    refused(no_digest, "its lmtrain.lora entry lacks base_digest", written)
    ckpt = crafted(lora_run, tmp_path / "yes.ckpt", lambda e: "yes")
    refused(ckpt, "its lmtrain.lora entry is a str, not a mapping", written)
    resume = [f"ckpt_path={ckpt}", "trainer.max_steps=8"]
    with pytest.raises(SystemExit):
        train(finetune_config(base, new_text, tmp_path / "resumed", data_dir, *resume))
    assert "entry is a str, not a mapping" in one_error_line(capsys.readouterr().err)
    ckpt = crafted(lora_run, tmp_path / "ln.ckpt", with_settings(target_modules=".*(c_attn|ln_1)"))
    refused(ckpt, "holds bad LoRA settings: model.peft.target_modules='.*(c_attn|ln_1)' matches")
    ckpt = crafted(lora_run, tmp_path / "r4.ckpt", with_settings(r=4))
    refused(ckpt, "holds adapters that do not fit its settings (size mismatch for", written)


def test_a_regular_expression_that_matches_a_layernorm_is_refused(base: Path) -> None:
    """peft's ValueError came after data preparation, wrapped as the model's refusal."""

    def module(targets: str) -> CausalLMModule:
        peft = {"target_modules": targets}
        return CausalLMModule(model_type=None, pretrained=str(base), peft=peft)

    with pytest.raises(LMTrainError) as caught:
        module(".*(c_attn|ln_1)")
    assert str(caught.value) == (
        "model.peft.target_modules='.*(c_attn|ln_1)' matches transformer.h.0.ln_1 (LayerNorm) "
        "and 1 more, which LoRA cannot adapt: narrow the expression, or pass a list ([c_attn])"
    )
    with pytest.raises(LMTrainError, match=r"matches transformer.h.0.attn \(GPT2Attention\)"):
        module(r".*\.attn")
    adapted = module(".*c_attn").model
    assert {n for n, m in adapted.named_modules() if hasattr(m, "lora_A")} == {
        f"base_model.model.transformer.h.{i}.attn.c_attn" for i in range(2)
    }


def test_a_resume_takes_the_same_targets_in_another_order(
    lora_run: Path, base: Path, new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    """[c_fc,c_attn,c_proj] was refused against the checkpoint's ['c_attn','c_proj','c_fc']."""
    assert load_torch_file(lora_run)["lmtrain"]["lora"]["settings"]["target_modules"] == [
        "c_attn", "c_proj", "c_fc"
    ]  # fmt: skip
    run_dir = tmp_path / "resumed"
    resume = [f"ckpt_path={lora_run}", "trainer.max_steps=8"]
    targets = "model.peft.target_modules=[c_fc,c_attn,c_proj]"
    train(finetune_config(base, new_text, run_dir, data_dir, *SHORT, *resume, targets))
    assert load_torch_file(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8


def test_the_adapter_folders_card_says_how_to_build_the_base_as_it_trained(adapters: Path) -> None:
    """Plain peft reads the base's config.json; the card names the recorded config."""
    card = (adapters / "README.md").read_text()
    assert "PeftModel.from_pretrained(base" in card
    assert "info.lora.hf_config" in card
