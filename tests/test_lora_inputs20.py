"""LoRA checkpoints, adapter folders and target modules, as red team rev_lora20 found them
(2026-12-06).

A base weight added to a LoRA checkpoint (its tensor digest recomputed) replaced the base that
its digest had pinned, in eval, generate, export and resume. `export merge=false` of 'all-linear'
adapters always failed: peft writes the layers it stands for into adapter_config.json, lmtrain.json
records the literal. A target_modules that is no regular expression was Hydra's multi-line error
(training) or re.error's traceback (an adapter folder); the "matches no layer" line suggested a
tied lm_head and a list of a LayerNorm, both refused; a base folder that moved was reported in the
hub's words about repo ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.checkpoint import load_model
from lmtrain.train import train
from lmtrain.utils.safe_load import load_torch_file
from lmtrain.utils.tensor_digest import DIGEST_KEY, add_digest
from tests.helpers.assertions import one_error_line
from tests.helpers.runs import export_tiny, refused_eval
from tests.test_lora import finetune_config, short_lora_run

ALL_LINEAR = "model.peft.target_modules=all-linear"


@pytest.fixture(scope="module")
def lora_run(
    base: Path, new_text: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Path:
    """A short LoRA run on every Linear/Conv1D layer of the tiny GPT-2 ('all-linear'); its
    last.ckpt."""
    return short_lora_run(tmp_path_factory, base, new_text, data_dir, ALL_LINEAR)


@pytest.fixture(scope="module")
def adapters(lora_run: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """lora_run's adapter folder: `export merge=false` refused its own temporary folder."""
    out = tmp_path_factory.mktemp("adapters") / "out"
    return export_tiny(lora_run, out, data_dir, "merge=false")


def one_line(folder: Path) -> str:
    with pytest.raises(LMTrainError) as caught:
        load_model(folder)
    line = str(caught.value)
    assert "\n" not in line and "Traceback" not in line, line
    return line


def edited(adapters: Path, folder: Path, **values: object) -> Path:
    """A copy of the adapter folder with `values` in its adapter_config.json."""
    shutil.copytree(adapters, folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **values}))
    return folder


def test_a_base_weight_in_a_lora_checkpoint_is_refused(
    lora_run: Path,
    base: Path,
    new_text: Path,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Eval exited 0 with val/ppl = the vocabulary size (the zeroed embedding); resume trained on
    it."""
    checkpoint = load_torch_file(lora_run)
    checkpoint.pop(DIGEST_KEY)
    wte = AutoModelForCausalLM.from_pretrained(base).get_input_embeddings().weight
    checkpoint["state_dict"]["model.base_model.model.transformer.wte.weight"] = torch.zeros_like(
        wte
    )
    add_digest(checkpoint)
    ckpt = tmp_path / "with-base.ckpt"
    torch.save(checkpoint, ckpt)
    line = refused_eval(ckpt, tmp_path / "eval", data_dir, capsys)
    assert (
        "holds weights of the frozen base model (base_model.model.transformer.wte.weight)" in line
    )
    resume = [f"ckpt_path={ckpt}", "trainer.max_steps=8"]
    with pytest.raises(SystemExit):
        train(finetune_config(base, new_text, tmp_path / "resumed", data_dir, *resume, ALL_LINEAR))
    line = one_error_line(capsys.readouterr().err)
    assert "holds weights of the frozen base model (model.base_model.model.transformer.wte" in line


def test_an_all_linear_adapter_folder_exports_and_loads_as_peft_loads_it(
    adapters: Path, base: Path, tmp_path: Path
) -> None:
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert isinstance(config["target_modules"], list)  # peft's expansion of 'all-linear'
    assert json.loads((adapters / "lmtrain.json").read_text())["info"]["lora"]["settings"][
        "target_modules"
    ] == "all-linear"  # fmt: skip
    ours = load_model(adapters).model.eval()
    theirs = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapters)
    ids = torch.arange(24)[None]
    with torch.inference_mode():
        torch.testing.assert_close(ours(input_ids=ids).logits, theirs.eval()(input_ids=ids).logits)
    # A list other than the one 'all-linear' places is still refused.
    fewer = edited(adapters, tmp_path / "fewer", target_modules=config["target_modules"][1:])
    line = one_line(fewer)
    assert "its target_modules is" in line and "but lmtrain.json records 'all-linear'" in line


def test_a_target_modules_that_is_no_regular_expression_is_one_line(
    adapters: Path, base: Path, tmp_path: Path
) -> None:
    with pytest.raises(LMTrainError) as caught:
        CausalLMModule(model_type=None, pretrained=str(base), peft={"target_modules": "(["})
    assert str(caught.value).startswith(
        "model.peft.target_modules='([' is not a regular expression (unterminated character set "
        "at position 1)"
    )
    line = one_line(edited(adapters, tmp_path / "bad-re", target_modules="(["))
    assert "its target_modules is '(['" in line and "unterminated character set" in line


def test_the_layers_suggested_for_a_target_that_matches_none_are_adaptable(base: Path) -> None:
    def refusal(targets: object) -> str:
        with pytest.raises(LMTrainError) as caught:
            CausalLMModule(model_type=None, pretrained=str(base), peft={"target_modules": targets})
        return str(caught.value)

    line = refusal(["nope"])
    assert "layers (c_attn, c_proj, c_fc)" in line and "lm_head" not in line  # tied: refused
    line = refusal("ln_1")  # as a list, a LayerNorm: refused too
    assert "pass a list" not in line and "layers (c_attn, c_proj, c_fc)" in line
    assert "pass a list, [c_attn]" in refusal("c_attn")


def test_a_base_folder_that_moved_is_named_as_a_missing_folder(
    adapters: Path, lora_run: Path, tmp_path: Path
) -> None:
    line = one_line(edited(adapters, tmp_path / "moved", base_model_name_or_path="/nope/zzz"))
    assert "(the folder '/nope/zzz' does not exist): point its base_model_name_or_path" in line
    assert "Repo id" not in line
    checkpoint = load_torch_file(lora_run)
    checkpoint["lmtrain"]["lora"]["base_model"] = "/nope/zzz"
    torch.save(checkpoint, tmp_path / "moved.ckpt")
    line = one_line(tmp_path / "moved.ckpt")
    assert "(the folder '/nope/zzz' does not exist): put that model back at" in line
