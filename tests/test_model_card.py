"""The export's model card: a `huggingface_hub.ModelCard` whose metadata the Hub reads (library,
pipeline, base model, datasets, validation results in model-index), with no secret in it."""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from lmtrain.models.checkpoint import CHECKPOINT_KEY, checkpoint_model
from lmtrain.models.model_card import final_metrics, model_card
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import export_tiny, train_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """last.ckpt of a 20-step tiny GPT-2 run (BPE tokenizer), metrics.json beside it."""
    root = tmp_path_factory.mktemp("model-card")
    return train_tiny(root / "run", data_dir, write_corpus(root / "corpus"))


def test_exported_card_loads_with_hub_metadata_and_the_runs_metrics(
    trained: Path, tmp_path: Path, data_dir: Path
) -> None:
    folder = export_tiny(trained, tmp_path / "hf", data_dir, "model_name=tiny-lm", "license=mit")
    card = ModelCard.load(folder / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.tags == ["lmtrain", "gpt2"] and data.license == "mit"
    assert data.model_name == "tiny-lm"
    assert data.base_model is None and data.datasets is None  # trained from scratch, local files

    metrics = json.loads((trained.parent.parent / "metrics.json").read_text())
    results = {r.metric_type: r for r in data.eval_results}
    expected = {"loss": metrics["val/loss"]}
    if "val/bpb" in metrics:  # the run measured bits per byte
        expected["bits_per_byte"] = metrics["val/bpb"]
    assert {k: r.metric_value for k, r in results.items()} == pytest.approx(expected, abs=1e-6)
    assert {r.dataset_type for r in results.values()} == {"TextFilesSource"}
    assert all(r.task_type == "text-generation" for r in results.values())
    assert "model-index" in (folder / "README.md").read_text()  # as the Hub reads results

    assert "# tiny-lm" in card.text and "| Training steps | 20 |" in card.text
    assert f"{metrics['val/loss']:.4f} nats/token (whole val split)" in card.text
    assert f'from_pretrained("{folder}")' in card.text  # tiny-lm: no repo of anyone's


@pytest.mark.parametrize("name", ["My tiny model", "me/tiny-lm"])
def test_the_usage_example_loads_the_model_name_only_when_it_is_a_repo(
    trained: Path, tmp_path: Path, data_dir: Path, name: str
) -> None:
    """`model_name='My tiny model'` gave `from_pretrained("My tiny model")`, which fails for
    whoever copies it (red team rev_exrep): the example names the folder instead, unless the
    name is a repo id with its namespace, where the model can be pushed and loaded from."""
    folder = export_tiny(trained, tmp_path / "hf", data_dir, f"model_name='{name}'")
    card = ModelCard.load(folder / "README.md")
    assert card.data.model_name == name and f"# {name}" in card.text
    loads = name if "/" in name else str(folder)
    assert f'AutoModelForCausalLM.from_pretrained("{loads}")' in card.text


def test_card_names_hub_base_model_and_dataset_but_never_a_local_path(
    trained: Path, tmp_path: Path
) -> None:
    """A fine-tune of a Hub model on a Hub dataset names both in the metadata; a local folder
    or file (not a Hub id) is named only in the text."""
    loaded = checkpoint_model(trained)
    run_config = copy.deepcopy(loaded.run_config)
    run_config["model"]["pretrained"] = "openai-community/gpt2"
    run_config["data"]["source"] = {
        "_target_": "lmtrain.data.hf_dataset.HFDatasetSource",
        "path": "roneneldan/TinyStories",
    }
    info = {"global_step": 20, "val_loss": 2.5, "val_bpb": 1.25}
    path = tmp_path / "README.md"
    model_card(loaded, run_config, info).save(path)
    data = ModelCard.load(path).data
    assert data.base_model == "openai-community/gpt2"
    assert data.datasets == ["roneneldan/TinyStories"]
    results = {r.metric_type: r.metric_value for r in data.eval_results}
    assert results == {"loss": 2.5, "bits_per_byte": 1.25}
    assert {r.dataset_type for r in data.eval_results} == {"roneneldan/TinyStories"}

    local = tmp_path / "my-base-model"
    local.mkdir()
    run_config["model"]["pretrained"] = str(local)
    run_config["data"]["source"]["path"] = str(tmp_path / "train.jsonl")
    model_card(loaded, run_config, info).save(path)
    card = ModelCard.load(path)
    assert card.data.base_model is None and card.data.datasets is None
    assert f"| Fine-tuned from | {local} |" in card.text


def test_card_holds_no_secret_of_the_run_config(
    trained: Path, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint whose run config holds secrets (as older runs' may) in the data source, which
    the card describes: a key naming a secret, a credential in a string, an environment token."""
    hf_token = "hf_" + secrets.token_hex(12)
    monkeypatch.setenv("HF_TOKEN", hf_token)
    keyed, written = secrets.token_hex(16), secrets.token_hex(16)
    checkpoint = load_torch_file(trained)
    source = checkpoint[CHECKPOINT_KEY]["run_config"]["data"]["source"]
    source.update(
        {"api_token": keyed, "note": f"password: {written}", "mirror": f"hf://{hf_token}@hub"}
    )
    ckpt = tmp_path / "with-secrets.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, ckpt)

    folder = export_tiny(ckpt, tmp_path / "hf", data_dir, "verify=false")
    text = (folder / "README.md").read_text()
    card = ModelCard.load(folder / "README.md")  # still a valid card
    assert card.data.library_name == "transformers"
    assert "TextFilesSource(" in card.text and "note='<redacted>'" in card.text
    assert "api_token" not in text
    for secret in (keyed, written, hf_token):
        assert secret not in text


def test_the_cards_whole_split_loss_comes_only_from_the_checkpoints_own_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`<ckpt>/../../metrics.json` was read whatever it was: a damaged one was a traceback, and a
    copied checkpoint could take another run's val loss at the same step."""
    info = {"global_step": 20, "tokens_seen": 5120}
    ours = {"trainer/global_step": 20, "tokens_seen": 5120.0, "val/loss": 2.5}

    def metrics_beside(folder: str, text: str) -> str:
        (tmp_path / folder / "checkpoints").mkdir(parents=True)
        (tmp_path / folder / "metrics.json").write_text(text)
        return str(tmp_path / folder / "checkpoints" / "last.ckpt")

    assert final_metrics(metrics_beside("run", json.dumps(ours)), info)["val_loss"] == 2.5
    other_run = {**ours, "tokens_seen": 2816.0, "val/loss": 1.0}  # same step, another batch
    assert final_metrics(metrics_beside("other", json.dumps(other_run)), info) == {}
    assert final_metrics(metrics_beside("cut", '{"val/loss": 1.0,'), info) == {}
    assert "metrics.json cannot be read" in caplog.text
    assert final_metrics(metrics_beside("listed", "[1, 2]"), info) == {}
    (tmp_path / "copied" / "ckpts").mkdir(parents=True)  # a copy outside a run's checkpoints/
    (tmp_path / "copied" / "metrics.json").write_text(json.dumps(ours))
    assert final_metrics(str(tmp_path / "copied" / "ckpts" / "last.ckpt"), info) == {}
    # Checkpoints saved elsewhere (callbacks.model_checkpoint.dirpath): the run config says where
    # the run folder is.
    elsewhere = str(tmp_path / "elsewhere" / "last.ckpt")
    run_config = {"paths": {"output_dir": str(tmp_path / "run")}}
    assert final_metrics(elsewhere, info, run_config)["val_loss"] == 2.5
    assert final_metrics(elsewhere, info, {"paths": {"output_dir": str(tmp_path / "other")}}) == {}
