"""LoRA fine-tuning (`model/peft=lora`, `experiment=finetune_lora`) of a tiny saved base model:
only the adapters train and the base stays bitwise put, checkpoints hold the adapters alone
(a small fraction of a full fine-tune's), eval and generate read them, the merged export and
peft's adapter folder give the training model's logits, and bad settings get one line. Runs in
processes (CLI, DDP, kill -9 and resume) are in test_lora_processes.py."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from lmtrain.errors import LMTrainError
from lmtrain.generate import generate
from lmtrain.models import CausalLMModule, lora
from lmtrain.models.checkpoint import checkpoint_model, load_model
from lmtrain.models.generation import generate_text
from lmtrain.train import train
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers import ROOT, pretrained
from tests.helpers.assertions import one_error_line
from tests.helpers.compose import TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.killed_runs import FINAL_WEIGHTS
from tests.helpers.pretrained import save_tiny_llama, save_tiny_pretrained
from tests.helpers.runs import eval_tiny, export_tiny

# 128 wide, so that the adapters (r=8 on every projection: 16 x 8 x 128 a block) are a few
# percent of the model, as they are of real ones; a random tiny base learns fast.
WIDTH = 128


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random GPT-2 (2 layers, 128 wide) and its BPE, as save_pretrained writes them."""
    return pretrained.pretrained_base(tmp_path_factory, n_embd=WIDTH)


def finetune_config(base: Path, corpus: Path, run_dir: Path, data_dir: Path, *overrides: str):
    return compose(
        "train",
        run_dir,
        data_dir,
        "experiment=finetune_lora",
        f"model.pretrained={base}",
        f"data.source.path={corpus}",
        *TINY_RUN,  # the model is the saved one
        "model.optimizer.lr=1e-2",  # adapters on a random tiny base: they may move fast
        "model.scheduler.num_warmup_steps=5",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "logger=none",
        *overrides,
    )


def short_lora_run(
    factory: pytest.TempPathFactory, base: Path, corpus: Path, data_dir: Path, *overrides: str
) -> Path:
    """6 steps of LoRA (validation at 3), `overrides` added; its last.ckpt."""
    run_dir = factory.mktemp("lora") / "run"
    short = ("trainer.max_steps=6", "trainer.val_check_interval=3")
    train(finetune_config(base, corpus, run_dir, data_dir, *short, *overrides))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def lora_run(
    base: Path, new_text: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> tuple[Path, dict[str, float]]:
    """20 steps of LoRA on new text; the run folder (with final_weights.pt: the whole module's
    state at the end) and its metrics."""
    run_dir = tmp_path_factory.mktemp("lora") / "run"
    weights = f"+callbacks.final_weights.path={run_dir / 'final_weights.pt'}"
    metrics = train(finetune_config(base, new_text, run_dir, data_dir, FINAL_WEIGHTS, weights))
    return run_dir, metrics


def training_model(base: Path, run_dir: Path) -> PeftModel:
    """The adapted model as training left it: a LoRA module over `base`, given the module's
    final state (final_weights.pt) strictly, without the checkpoint loader."""
    module = CausalLMModule(model_type=None, pretrained=str(base), peft="lora")
    module.load_state_dict(load_torch_file(run_dir / "final_weights.pt")["state_dict"])
    return module.model.eval()


def test_only_the_adapters_train_and_the_loss_falls(
    lora_run: tuple[Path, dict[str, float]], base: Path, new_text: Path, data_dir: Path, tmp_path
) -> None:
    run_dir, metrics = lora_run
    data = ["data=text_files", f"data.source.path={new_text}", "data.block_size=32"]
    before = eval_tiny(base, tmp_path / "before", data_dir, *data)["val/loss"]
    assert metrics["val/loss"] < before - 0.5, (before, metrics)

    final = load_torch_file(run_dir / "final_weights.pt")["state_dict"]
    prefix = "model.base_model.model."
    trained = {k[len(prefix) :]: v for k, v in final.items() if "lora_" not in k}
    start = AutoModelForCausalLM.from_pretrained(base).state_dict()
    assert {k.replace(".base_layer", "") for k in trained} == set(start)
    for name, weight in trained.items():
        assert torch.equal(weight, start[name.replace(".base_layer", "")]), name
    adapters = [k for k in final if ".lora_B." in k]
    assert len(adapters) == 2 * 4  # c_attn, attn.c_proj, c_fc, mlp.c_proj in 2 blocks
    assert all(final[k].abs().sum() > 0 for k in adapters)  # B starts at zero: it moved


def test_checkpoint_holds_the_adapters_and_is_a_fraction_of_a_full_one(
    lora_run: tuple[Path, dict[str, float]], base: Path, new_text: Path, data_dir: Path, tmp_path
) -> None:
    run_dir, _ = lora_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    checkpoint = load_torch_file(ckpt)
    assert checkpoint["global_step"] == 20
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])
    saved = checkpoint["lmtrain"]["lora"]
    assert saved["base_model"] == str(base.resolve())
    assert saved["settings"] == {
        "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["c_attn", "c_proj", "c_fc"]
    }  # fmt: skip
    assert saved["base_digest"] == lora.weights_digest(AutoModelForCausalLM.from_pretrained(base))

    full_dir = tmp_path / "full"
    cfg = finetune_config(
        base, new_text, full_dir, data_dir, "model/peft=none", "trainer.max_steps=2",
        "callbacks.text_samples=null",
    )  # fmt: skip
    train(cfg)
    full = (full_dir / "checkpoints" / "last.ckpt").stat().st_size
    size = ckpt.stat().st_size
    print(f"LoRA checkpoint {size:,} bytes, full fine-tune {full:,} ({size / full:.1%})")
    assert size < 0.10 * full


def test_merged_export_and_adapter_folder_give_the_training_models_logits(
    lora_run: tuple[Path, dict[str, float]], base: Path, data_dir: Path, tmp_path: Path
) -> None:
    run_dir, _ = lora_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    merged = export_tiny(ckpt, tmp_path / "merged", data_dir)
    adapters = export_tiny(ckpt, tmp_path / "adapters", data_dir, "merge=false")

    model = training_model(base, run_dir)
    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapters)
    ids = torch.randint(
        0, model.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        from_merged = plain(input_ids=ids).logits
        from_adapters = peft_model.eval()(input_ids=ids).logits
    print(
        "logits max abs diff: merged",
        (from_merged - expected).abs().max().item(),
        "adapters",
        (from_adapters - expected).abs().max().item(),
    )
    torch.testing.assert_close(from_merged, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(from_adapters, expected, rtol=0, atol=0)
    with torch.inference_mode():  # lmtrain's own tools (eval, generate) take the folder too
        torch.testing.assert_close(load_model(adapters).model(input_ids=ids).logits, expected)

    tokenizer = AutoTokenizer.from_pretrained(merged)
    prompt = tokenizer("the", return_tensors="pt").input_ids
    greedy = {"max_new_tokens": 20, "do_sample": False}
    with torch.inference_mode():
        text = tokenizer.decode(model.generate(input_ids=prompt, **greedy)[0])
        assert tokenizer.decode(plain.generate(prompt, **greedy)[0]) == text
    assert not (merged / "adapter_config.json").exists()
    assert (adapters / "adapter_model.safetensors").is_file()
    assert not (adapters / "config.json").exists()  # the adapters alone, not the base
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base.resolve())
    assert AutoTokenizer.from_pretrained(adapters).get_vocab() == tokenizer.get_vocab()
    card = (merged / "README.md").read_text()
    assert "| LoRA | r=8, alpha=16, on c_attn, c_proj, c_fc |" in card
    assert "library_name: peft" in (adapters / "README.md").read_text()
    assert "PeftModel.from_pretrained" in (adapters / "README.md").read_text()


def test_the_merged_export_of_a_bf16_base_keeps_what_the_adapters_learned(
    base: Path, new_text: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A base saved in bf16 (most hub models) stays bf16 while its adapters train; merged into
    it, their change rounded away, and the export's own check refused the folder with a
    traceback (red team rev_peft, 2026-12-05). The merged export is float32, the trained
    weights exactly: the adapter folder's logits, computed in float32."""
    bf16 = tmp_path / "bf16-base"
    AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16).save_pretrained(bf16)
    AutoTokenizer.from_pretrained(base).save_pretrained(bf16)
    run_dir = tmp_path / "run"
    train(finetune_config(bf16, new_text, run_dir, data_dir, "trainer.max_steps=10"))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    merged = export_tiny(ckpt, tmp_path / "merged", data_dir)
    adapters = export_tiny(ckpt, tmp_path / "adapters", data_dir, "merge=false")

    plain = AutoModelForCausalLM.from_pretrained(merged).eval()
    assert plain.dtype == torch.float32
    float_base = AutoModelForCausalLM.from_pretrained(bf16, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(float_base, adapters).eval()
    ids = torch.randint(
        0, plain.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0)
    )
    with torch.inference_mode():
        expected = adapted(input_ids=ids).logits
        torch.testing.assert_close(plain(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
        with adapted.disable_adapter():
            unadapted = adapted(input_ids=ids).logits
    assert (unadapted - expected).abs().max() > 1e-3  # the adapters did change the model


def test_eval_and_generate_read_the_lora_checkpoint(
    lora_run: tuple[Path, dict[str, float]], base: Path, data_dir: Path, tmp_path: Path, capsys
) -> None:
    run_dir, metrics = lora_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    evaluated = eval_tiny(ckpt, tmp_path / "eval", data_dir)
    assert evaluated["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)

    settings = ["prompt=the", "greedy=true", "max_new_tokens=12", "device=cpu"]
    cfg = compose("generate", tmp_path / "gen", data_dir, f"ckpt_path={ckpt}", *settings)
    texts = generate(cfg)
    model, tokenizer = training_model(base, run_dir), AutoTokenizer.from_pretrained(base)
    greedy = {"max_new_tokens": 12, "greedy": True, "stop_at_eos": True}
    assert texts == generate_text(model, tokenizer, "the", **greedy)
    assert texts[0] in capsys.readouterr().out


def test_lora_on_a_changed_base_or_resumed_without_lora_is_refused(
    lora_run: tuple[Path, dict[str, float]],
    base: Path,
    new_text: Path,
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, _ = lora_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    other = tmp_path / "other-base"
    texts = [p.read_text() for p in write_corpus(tmp_path / "pretrain", seed=5).iterdir()]
    save_tiny_pretrained(other, texts, n_embd=WIDTH, seed=1)  # the same but for its weights
    resume = [f"ckpt_path={ckpt}", "trainer.max_steps=25"]
    with pytest.raises(SystemExit):
        train(finetune_config(other, new_text, tmp_path / "changed", data_dir, *resume))
    line = one_error_line(capsys.readouterr().err)
    assert f"ckpt_path={str(ckpt)!r} holds LoRA adapters of other base weights" in line
    cfg = finetune_config(base, new_text, tmp_path / "full", data_dir, *resume, "model/peft=none")
    with pytest.raises(SystemExit):
        train(cfg)
    line = one_error_line(capsys.readouterr().err)
    assert "holds LoRA adapters: resume with model/peft=lora" in line
    # The base moved away: eval says where it was.
    moved = tmp_path / "lora.ckpt"
    checkpoint = load_torch_file(ckpt)
    checkpoint["lmtrain"]["lora"]["base_model"] = str(tmp_path / "gone")
    torch.save(checkpoint, moved)
    with pytest.raises(LMTrainError, match=r"could not be loaded .*: put that model back at"):
        checkpoint_model(moved)


def test_default_targets_per_architecture_and_the_log_line(
    base: Path, tmp_path: Path, caplog, compose_cfg
) -> None:
    texts = [p.read_text() for p in write_corpus(tmp_path / "pretrain", n_docs=1).iterdir()]
    llama = save_tiny_llama(tmp_path / "llama", texts)
    with caplog.at_level(logging.INFO, logger="lmtrain.models.lora"):
        module = CausalLMModule(model_type=None, pretrained=str(llama), peft="lora")
    adapted = {
        n.rsplit(".", 1)[-1] for n, m in module.model.named_modules() if hasattr(m, "lora_A")
    }
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable, total = module.model.get_nb_trainable_parameters()
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == trainable
    assert f"{trainable:,} trainable parameters of {total:,}" in caplog.text

    # model.peft=lora (a value) is model/peft=lora (the group), whose file holds the defaults.
    model = ["model=pretrained", f"model.pretrained={base}"]
    as_value = compose_cfg(*model, "model.peft=lora", tiny=False)
    as_group = compose_cfg(*model, "model/peft=lora", tiny=False)
    assert as_value.model.peft == "lora"
    assert OmegaConf.to_container(as_group.model.peft) == lora.DEFAULTS
    assert OmegaConf.load(ROOT / "configs/model/peft/lora.yaml") == lora.DEFAULTS
    module = instantiate(as_value.model, _convert_="all")
    assert (
        module.model.lmtrain_lora == instantiate(as_group.model, _convert_="all").model.lmtrain_lora
    )


def test_bad_lora_settings_are_refused_in_one_line(base: Path, tmp_path: Path) -> None:
    def refused(match: str, **kwargs) -> None:
        settings = {"model_type": None, "pretrained": str(base), "peft": "lora", **kwargs}
        with pytest.raises(LMTrainError, match=match):
            CausalLMModule(**settings)

    refused(
        r"model.freeze.embeddings=true with LoRA: LoRA already freezes", freeze={"embeddings": True}
    )
    refused(r"model.freeze.first_n_blocks=1 with LoRA", freeze={"first_n_blocks": 1})
    refused(r"LoRA \(model/peft=lora\) needs model.pretrained", pretrained=None, model_type="gpt2")
    refused(r"model.peft='lora2' is unknown: use model/peft=lora", peft="lora2")
    refused(r"model.peft.r=0 is not a rank", peft={"r": 0})
    refused(
        r"'mlp' matches no layer .* \(c_attn, c_proj, c_fc\)",
        peft={"target_modules": ["mlp"]},
    )
    # peft reads a string as a regular expression for whole names: 'c_attn' matches none.
    refused(r"a string is a regular expression .*\[c_attn\]", peft={"target_modules": "c_attn"})
    # GPT-2 ties lm_head to wte: an adapter on either, merged, would change both.
    refused(r"adapts lm_head, which shares its weight", peft={"target_modules": ["lm_head"]})
    refused(r"adapts transformer.wte, which shares", peft={"target_modules": ["c_fc", "wte"]})


def test_adapters_on_a_tied_embedding_export_unmerged_only(base: Path) -> None:
    """A checkpoint adapted on the tied lm_head (trained before the refusal above): merged, the
    adapter went into the weight wte shares, and the export gave other logits; so merging is
    refused in one line that names merge=false, whose adapter folder keeps the model."""
    from peft import get_peft_model

    model = AutoModelForCausalLM.from_pretrained(base)
    settings = {**lora.DEFAULTS, "target_modules": ["lm_head"]}
    adapted = get_peft_model(model, lora.lora_config(model, settings))
    with torch.no_grad():
        adapted.base_model.model.lm_head.lora_B["default"].weight.fill_(0.1)
        ids = torch.arange(8)[None]
        before = adapted(input_ids=ids).logits
        assert not torch.allclose(adapted.merge_and_unload()(input_ids=ids).logits, before)
    adapted = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), lora.lora_config(model, settings)
    )
    with pytest.raises(LMTrainError, match=r"adapters are on lm_head.*export with merge=false"):
        lora.merged(adapted)


def test_merge_false_needs_lora_adapters(
    base: Path, tmp_path: Path, data_dir: Path, capsys
) -> None:
    with pytest.raises(SystemExit):
        export_tiny(base, tmp_path / "out", data_dir, "merge=false")
    assert "merge=false writes LoRA adapters alone" in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_the_base_of_lora_adapters_is_never_exported_over_and_is_checked_by_adapter_folders(
    lora_run: tuple[Path, dict[str, float]], base: Path, data_dir: Path, tmp_path: Path, capsys
) -> None:
    run_dir, _ = lora_run
    # This test's copy of the base, exported by lmtrain (so overwrite=true would replace it);
    # its own: a failure must not spoil the shared one.
    own_base = export_tiny(base, tmp_path / "base", data_dir)
    ckpt = tmp_path / "lora.ckpt"
    checkpoint = load_torch_file(run_dir / "checkpoints" / "last.ckpt")
    checkpoint["lmtrain"]["lora"]["base_model"] = str(own_base)  # the same weights
    torch.save(checkpoint, ckpt)
    before = digests(own_base)
    # An export with overwrite=true replaced the base with the merged weights: the checkpoint
    # (adapters alone) could then never be resumed, evaluated or exported again.
    for merge in ("merge=true", "merge=false"):
        with pytest.raises(SystemExit):
            export_tiny(ckpt, own_base, data_dir, "overwrite=true", merge)
        line = one_error_line(capsys.readouterr().err)
        assert f"is or contains {str(own_base.resolve())!r}, the base model of the LoRA" in line
        assert "never replaced, even with overwrite=true" in line
    assert digests(own_base) == before
    # The same adapter export twice: the second was refused as "not an lmtrain export".
    adapters = tmp_path / "exports" / "adapters"
    for _ in range(2):
        export_tiny(ckpt, adapters, data_dir, "merge=false", "overwrite=true")
    # Other weights at the base: the adapter folder gave other numbers, silently.
    changed = AutoModelForCausalLM.from_pretrained(own_base)
    with torch.no_grad():
        changed.transformer.h[0].mlp.c_fc.weight.mul_(0.5)
    changed.save_pretrained(own_base)
    with pytest.raises(LMTrainError, match="holds LoRA adapters of other base weights than"):
        load_model(adapters)


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}
