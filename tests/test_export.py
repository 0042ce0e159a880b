"""`lmtrain.export`: a folder plain transformers loads, with the checkpoint's logits and text.

One tiny model per kind (GPT-2 with a char and with a BPE tokenizer, Llama with BPE) is trained,
exported, and reloaded in a fresh process that cannot import lmtrain.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig

from lmtrain.export import scrub
from lmtrain.generate import generate
from lmtrain.utils.checkpoint import load_checkpoint, model_from_checkpoint
from tests.checkpoints import (
    TINY_LLAMA,
    compose_config,
    export_tiny,
    reload_in_fresh_process,
    train_tiny,
    write_corpus,
)

KINDS = {
    "gpt2-char": ["data.tokenizer.kind=char"],
    "gpt2-bpe": [],
    "llama-bpe": TINY_LLAMA,
}
PROMPT = "The cat"
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, tuple]:
    """kind -> (checkpoint, export folder), each trained for 20 steps."""
    root = tmp_path_factory.mktemp("export")
    corpus = write_corpus(root / "corpus")
    result = {}
    for kind, overrides in KINDS.items():
        ckpt = train_tiny(root / kind, data_dir, corpus, *overrides)
        result[kind] = (ckpt, export_tiny(ckpt, root / f"{kind}-hf", data_dir))
    return result


def greedy_from_cli(ckpt: Path, tmp_path: Path, data_dir: Path, capsys) -> str:
    """What `python -m lmtrain.generate ckpt_path=<ckpt> greedy=true` prints."""
    cfg = compose_config(
        "generate",
        tmp_path / "generate",
        data_dir,
        f"ckpt_path={ckpt}",
        f"prompt='{PROMPT}'",
        "greedy=true",
        f"max_new_tokens={NEW_TOKENS}",
    )
    capsys.readouterr()
    generate(cfg)
    return capsys.readouterr().out


def test_export_reloads_in_fresh_process_with_same_logits_and_greedy_text(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path, capsys
) -> None:
    ids = list(range(3, 40))
    reloaded = reload_in_fresh_process(
        [(str(folder), PROMPT, ids, NEW_TOKENS) for _, folder in exported.values()]
    )
    for kind, (ckpt, folder) in exported.items():
        theirs = reloaded[str(folder)]
        model, _, _ = model_from_checkpoint(ckpt)
        with torch.inference_mode():
            ours = model(input_ids=torch.tensor([ids])).logits[0]
        torch.testing.assert_close(torch.tensor(theirs["logits"]), ours, rtol=1e-5, atol=1e-5)
        assert theirs["tied"], kind
        assert theirs["tokenizer"] in {"TokenizersBackend", "PreTrainedTokenizerFast"}, kind
        cli_text = greedy_from_cli(ckpt, tmp_path / kind, data_dir, capsys)
        assert cli_text == theirs["text"] + "\n", kind
        assert len(cli_text) > len(PROMPT) + 1, kind


def test_export_folder_holds_clean_weights_card_and_generation_config(
    exported: dict[str, tuple],
) -> None:
    ckpt, folder = exported["gpt2-bpe"]
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= names
    assert {"tokenizer_config.json", "README.md", "lmtrain.json"} <= names
    assert not any(p.name.startswith(".") for p in folder.parent.iterdir())  # no temp left over

    with safe_open(folder / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    plain = AutoModelForCausalLM.from_pretrained(folder)
    assert keys == set(plain.state_dict()) - {"lm_head.weight"}  # tied: saved once
    assert not any(k.startswith(("model.transformer", "_orig_mod")) for k in keys)

    generation = GenerationConfig.from_pretrained(folder)
    assert generation.do_sample and generation.top_k == 50
    assert generation.eos_token_id == plain.config.eos_token_id

    checkpoint = load_checkpoint(ckpt)
    card = (folder / "README.md").read_text()
    metrics = json.loads((ckpt.parent.parent / "metrics.json").read_text())
    assert "library_name: transformers" in card
    assert "TextFilesSource(path=" in card and "| Tokenizer | bpe, " in card
    assert f"| Training steps | {checkpoint['global_step']} |" in card
    assert f"| Tokens seen | {20 * 8 * 32:,} |" in card
    assert f"{metrics['val/loss']:.4f} nats/token (whole val split)" in card

    meta = json.loads((folder / "lmtrain.json").read_text())
    assert meta["run_config"]["data"]["block_size"] == 32
    assert "hydra" not in meta["run_config"]
    assert meta["info"]["global_step"] == 20


def test_export_strips_compile_prefixes(
    exported: dict[str, tuple], tmp_path: Path, data_dir: Path
) -> None:
    """A checkpoint of a `torch.compile`-wrapped model (`model._orig_mod.*`) exports clean names."""
    ckpt, folder = exported["llama-bpe"]
    checkpoint = load_checkpoint(ckpt)
    checkpoint["state_dict"] = {
        k.replace("model.", "model._orig_mod.", 1): v for k, v in checkpoint["state_dict"].items()
    }
    wrapped = tmp_path / "compiled.ckpt"
    torch.save(checkpoint, wrapped)
    out = export_tiny(wrapped, tmp_path / "compiled-hf", data_dir)
    with (
        safe_open(out / "model.safetensors", "pt") as a,
        safe_open(folder / "model.safetensors", "pt") as b,
    ):
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_export_refuses_to_overwrite_unless_asked(
    exported: dict[str, tuple], data_dir: Path, capsys
) -> None:
    ckpt, folder = exported["gpt2-char"]
    with pytest.raises(SystemExit) as exit_info:
        export_tiny(ckpt, folder, data_dir)
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: out_dir={str(folder)!r} exists") and "overwrite=true" in line
    assert export_tiny(ckpt, folder, data_dir, "overwrite=true") == folder
    assert (folder / "model.safetensors").is_file()


def test_scrub_drops_hydra_and_secret_keys() -> None:
    config = {
        "hydra": {"run": {}},
        "logger": {"wandb": {"api_key": "k", "project": "p"}},
        "x": [{"hf_token": "t", "auth_header": "a", "data": 1}],
        "data": {"tokenizer": {"kind": "bpe"}},
    }
    assert scrub(config) == {
        "logger": {"wandb": {"project": "p"}},
        "x": [{"data": 1}],
        "data": {"tokenizer": {"kind": "bpe"}},
    }
