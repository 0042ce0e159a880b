"""The review of stop 50's fixes (rev_diff20), each on the function that had it wrong:

- the hint for a number given as text named `betas[0]=0.9`, which Hydra's grammar refuses;
- `PROJECT_ROOT='~/proj'` was blamed on `paths.root_dir`, which the user never passed;
- `model.pretrained=models/gpt2` (a folder of `models/` that is missing) was read as a hub id;
- peft before full names wrote `all-linear` as short ones (`c_attn`), which were compared as
  a list with the full names and refused.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lmtrain.errors import LMTrainError
from lmtrain.models.lora_targets import adapted_layers, all_linear_layers
from lmtrain.models.pretrained import moved_folder
from lmtrain.utils.checks import text_hint
from lmtrain.utils.run_dir_checks import refuse_unmade_folder


def test_the_text_hint_spells_a_list_item_as_hydras_overrides_do() -> None:
    hint = text_hint("model.optimizer.betas[0]", "0.9", float)
    assert "model.optimizer.betas.0=0.9" in hint
    assert "'model.optimizer.betas.0=\"${oc.decode:${oc.env:<VAR>}}\"'" in hint
    assert "[0]" not in hint
    assert text_hint("seed", "abc", int) == ""


def test_a_tilde_from_project_root_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROJECT_ROOT", "~/proj")
    config = OmegaConf.create(
        {
            "paths": {
                "root_dir": "${oc.env:PROJECT_ROOT,.}",
                "data_dir": "${paths.root_dir}/data",
                "log_dir": "${paths.root_dir}/logs",
            },
            "hydra": {"run": {"dir": "${paths.log_dir}/train/runs/x"}},
        }
    )
    with pytest.raises(LMTrainError) as error:
        refuse_unmade_folder(config, "hydra.run.dir")
    home = str(Path("~/proj").expanduser())
    assert str(error.value).startswith("paths.root_dir (from PROJECT_ROOT)='~/proj' starts with ~")
    assert f"e.g. PROJECT_ROOT={home}" in str(error.value)


def test_a_missing_folder_under_a_folder_here_is_no_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    assert moved_folder("models/gpt2")
    assert moved_folder("./gpt2") and moved_folder("/nope/zzz")
    assert not moved_folder("openai-community/gpt2")  # no folder of that name here: a hub id
    assert not moved_folder("gpt2")


LLAMA = LlamaConfig(
    num_hidden_layers=2,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=2,
    vocab_size=64,
)


@pytest.mark.parametrize(
    "model",
    [
        GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)),  # Conv1D
        LlamaForCausalLM(LLAMA),  # an untied lm_head, the output layer
    ],
    ids=["gpt2", "llama"],
)
def test_short_target_names_adapt_the_layers_all_linear_stands_for(model: object) -> None:
    full = all_linear_layers(model)
    short = sorted({name.rsplit(".", 1)[-1] for name in full})  # what older peft wrote
    assert adapted_layers(model, short) == set(full)
    assert adapted_layers(model, full) == set(full)
    assert adapted_layers(model, short[:-1]) != set(full)
    assert "lm_head" not in short
