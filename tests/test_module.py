"""CausalLMModule: its loss is HF's loss, its optimizer and schedule (cosine.yaml) are nanoGPT's."""

from __future__ import annotations

import csv
import functools
import logging
import math
from pathlib import Path

import pytest
import torch
import transformers

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.hf import check_context
from lmtrain.train import train
from tests.helpers.compose import char_corpus_run
from tests.helpers.corpora import one_file_corpus

GPT2 = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64, "vocab_size": 97}
LLAMA = {
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "vocab_size": 97,
}


@pytest.mark.parametrize(("model_type", "config"), [("gpt2", GPT2), ("llama", LLAMA)])
def test_loss_equals_hf_labels_loss(model_type: str, config: dict) -> None:
    torch.manual_seed(0)
    module = CausalLMModule(model_type=model_type, config=config).eval()  # no dropout
    windows = torch.randint(0, 97, (3, 33))
    ours = module.loss(windows)
    theirs = module.model(input_ids=windows, labels=windows).loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert 3.0 < ours.item() < 6.0  # about ln(97) = 4.57 for an untrained model


@pytest.mark.parametrize(("model_type", "config"), [("gpt2", GPT2), ("llama", LLAMA)])
def test_forward_builds_no_kv_cache(model_type: str, config: dict) -> None:
    # HF's default use_cache=True copies every layer's keys and values into a cache each
    # forward, training included: work nanoGPT's model does not do, for the same logits.
    torch.manual_seed(0)
    module = CausalLMModule(model_type=model_type, config=config).eval()  # no dropout
    outputs = []
    module.model.register_forward_hook(lambda _m, _args, out: outputs.append(out))
    inputs = torch.randint(0, 97, (3, 32))
    logits = module(inputs)
    assert not any(isinstance(v, transformers.Cache) for v in outputs[0].values())
    assert torch.equal(logits, module.model(input_ids=inputs).logits)  # bitwise the same
    assert isinstance(outputs[1].past_key_values, transformers.Cache)  # what the default does


def test_weight_decay_only_on_matrices() -> None:
    module = CausalLMModule(
        model_type="gpt2",
        config=GPT2,
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1),
    )
    optimizer = module.configure_optimizers()["optimizer"]
    decayed, undecayed = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and undecayed["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"])
    assert all(p.dim() < 2 for p in undecayed["params"])
    n_params = sum(p.numel() for p in module.model.parameters())
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == n_params


def expected_lr(step: int, peak: float, warmup: int, total: int, floor: float) -> float:
    """The learning rate for optimizer step `step` (0-based) of a linear warm-up from 0 over
    `warmup` steps, then a half cosine from `peak` down to `floor * peak` at step `total`."""
    if step < warmup:
        return peak * step / warmup
    progress = (step - warmup) / (total - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def logged_lrs(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """Per parameter group, the learning rate LearningRateMonitor logged at each step."""
    curves: dict[str, dict[int, float]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key.startswith("train/lr") and value:
                    curves.setdefault(key, {})[int(row["step"])] = float(value)
    return curves


def test_schedule_is_cosine_yaml_warm_up_then_decay_to_the_floor(
    compose_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The learning rate a real run applies at each optimizer step, as LearningRateMonitor logs
    it to the CSV logger: configs/model/scheduler/cosine.yaml's linear warm-up from 0 over
    num_warmup_steps, then a cosine down to min_lr_rate x lr at max_steps. Two micro-batches a
    step: the schedule counts optimizer steps, not batches."""
    base = compose_cfg()
    scheduler, peak = base.model.scheduler, base.model.optimizer.lr
    warmup, floor = scheduler.num_warmup_steps, scheduler.min_lr_rate
    total = 2 * warmup  # as long again after the warm-up
    cfg = compose_cfg(
        *char_corpus_run(tmp_path, "csv"),
        "data.batch_size=4",
        "global_batch_size=8",
        f"trainer.max_steps={total}",
        f"trainer.val_check_interval={10 * total}",  # no validation before the final one
    )
    with caplog.at_level(logging.INFO, logger="lmtrain.train"):
        train(cfg)
    # val_check_interval counts batches: the run says what it is in optimizer steps.
    cadence = f"trainer.val_check_interval={10 * total} counts batches: with 2 batches per "
    assert f"{cadence}optimizer step (global_batch_size), a validation every {5 * total} " in (
        caplog.text
    )
    curves = logged_lrs(tmp_path / "run" / "csv" / "metrics.csv")
    assert set(curves) == {"train/lr/decay", "train/lr/no_decay"}  # AdamW's two groups
    assert curves["train/lr/decay"] == curves["train/lr/no_decay"]
    lrs = curves["train/lr/decay"]
    assert sorted(lrs) == list(range(total))
    for step, lr in lrs.items():
        assert lr == pytest.approx(expected_lr(step, peak, warmup, total, floor), rel=1e-6), step

    assert lrs[0] == 0.0 and lrs[warmup // 2] == pytest.approx(peak * (warmup // 2) / warmup)
    assert max(lrs.values()) == pytest.approx(peak) == lrs[warmup]
    assert lrs[warmup + (total - warmup) // 2] == pytest.approx(peak * (1 + floor) / 2)
    assert all(lrs[s] >= lrs[s + 1] for s in range(warmup, total - 1))
    # After the last step the optimizer holds the floor, min_lr_rate x lr.
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == total
    final = [group["lr"] for group in ckpt["optimizer_states"][0]["param_groups"]]
    assert final == pytest.approx([floor * peak] * 2)


def test_an_architecture_without_sdpa_is_told_to_use_eager() -> None:
    """Bloom has no sdpa path: the advice was `pass model.attn_implementation=sdpa`, the value
    that had just failed."""
    bloom = {"n_layer": 1, "hidden_size": 32, "n_head": 2}
    with pytest.raises(LMTrainError) as err:
        CausalLMModule(model_type="bloom", config=bloom)
    assert str(err.value).endswith(
        ": pass model.attn_implementation=eager (this architecture has no sdpa path)"
    )
    module = CausalLMModule(model_type="bloom", config=bloom, attn_implementation="eager")
    assert module.model.config.model_type == "bloom"


def test_a_model_type_without_a_causal_lm_is_named() -> None:
    """t5 (encoder-decoder) was told to check the values under model against the arguments
    of CausalLMModule."""
    with pytest.raises(LMTrainError) as err:
        CausalLMModule(model_type="t5", config={"num_layers": 1, "d_model": 32})
    assert str(err.value) == (
        "model.model_type='t5' has no causal LM in transformers (an encoder or encoder-decoder "
        "model): use a decoder type (gpt2, llama, mistral, qwen2, ...)"
    )


@pytest.mark.parametrize("model_type", ["bert", "roberta"])
def test_an_encoder_with_an_lm_head_is_refused_unless_it_is_a_decoder(model_type: str) -> None:
    """transformers builds BertLMHeadModel for model_type=bert and only warns that it attends
    both ways: trained on, its val loss fell by reading the next token."""
    encoder = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2}
    encoder["intermediate_size"] = 64
    with pytest.raises(LMTrainError, match=rf"model_type='{model_type}' attends to later tokens"):
        CausalLMModule(model_type=model_type, config=encoder)
    module = CausalLMModule(model_type=model_type, config=encoder | {"is_decoder": True})
    assert module.model.config.is_decoder


def test_block_size_longer_than_context_is_refused() -> None:
    module = CausalLMModule(model_type="gpt2", config=GPT2)
    check_context(module.model.config, 64)
    with pytest.raises(LMTrainError, match=r"data.block_size=65 .*context \(64"):
        check_context(module.model.config, 65)


def test_tokens_seen_counts_on_when_a_run_resumes_with_another_batch_size(
    compose_cfg, tmp_path: Path
) -> None:
    """tokens_seen was derived from the steps and this run's batch size, so a run resumed
    with another data.batch_size recounted every earlier step at the new size."""
    tiny = char_corpus_run(tmp_path, "none")
    first = train(compose_cfg(*tiny, "data.batch_size=8", "trainer.max_steps=4"))
    assert first["tokens_seen"] == 4 * 8 * 32  # steps x windows x tokens (TINY: block 32)
    resumed = train(
        compose_cfg(*tiny, "data.batch_size=4", "trainer.max_steps=6", "ckpt_path=last")
    )
    assert resumed["tokens_seen"] == 4 * 8 * 32 + 2 * 4 * 32


def test_validate_then_fit_with_a_plain_trainer(tmp_path: Path, data_dir: Path) -> None:
    # The Python API as a Lightning user calls it: a baseline validation, then fit, on one module.
    import lightning as L

    from lmtrain.data import TextDataModule
    from lmtrain.data.sources import TextFilesSource

    torch.manual_seed(0)
    source = TextFilesSource(path=str(one_file_corpus(tmp_path / "corpus")))
    datamodule = TextDataModule(
        source=source, tokenizer={"kind": "char"}, block_size=32, batch_size=8, cache_dir=data_dir
    )
    datamodule.prepare_data()
    module = CausalLMModule(
        model_type="gpt2",
        config={k: v for k, v in GPT2.items() if k != "vocab_size"},
        tokenizer=datamodule.tokenizer,
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-3),
    )
    trainer = L.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=2,
        default_root_dir=tmp_path,
    )
    before = trainer.validate(module, datamodule, verbose=False)[0]["val/loss"]
    trainer.fit(module, datamodule)
    after = trainer.validate(module, datamodule, verbose=False)[0]["val/loss"]
    assert after < before - 0.5, (before, after)
