"""Speed switches and throughput bookkeeping: FLOP counts, compile, gradient accumulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from lmtrain.errors import LMTrainError
from lmtrain.models.flops import flops_per_batch
from lmtrain.train import gradient_accumulation, train
from lmtrain.utils.safe_load import load_torch_file
from tests.helpers.runs import model_from_checkpoint


@pytest.mark.parametrize(
    ("n_layer", "d", "seq_len", "vocab"),
    [(4, 128, 64, 66), (6, 384, 256, 2048), (12, 768, 1024, 50257)],
)
def test_flops_match_the_closed_form(n_layer: int, d: int, seq_len: int, vocab: int) -> None:
    """Per token: 6N + 12·L·d·T (PaLM appendix B), N = the matmul weights incl. the LM head."""
    config = AutoConfig.for_model(
        "gpt2",
        n_layer=n_layer,
        n_head=d // 64 or 1,
        n_embd=d,
        n_positions=seq_len,
        vocab_size=vocab,
        bos_token_id=0,
        eos_token_id=0,
    )
    counted = flops_per_batch(config, batch_size=2, seq_len=seq_len) / (2 * seq_len)
    n_matmul = 12 * n_layer * d * d + vocab * d
    closed_form = 6 * n_matmul + 12 * n_layer * d * seq_len
    assert counted == pytest.approx(closed_form, rel=0.10)


def test_flops_are_counted_for_a_model_without_a_kv_cache() -> None:
    """`model.config.use_cache=false` (GPT-2 and Llama) was a traceback when the run counted
    its FLOPs: transformers looked for packed sequences with `.item()` on meta tensors."""
    gpt2 = {"n_layer": 1, "n_head": 2, "n_embd": 32, "bos_token_id": 0, "eos_token_id": 0}
    for use_cache in (True, False):
        config = AutoConfig.for_model("gpt2", **gpt2, use_cache=use_cache)
        assert flops_per_batch(config, batch_size=2, seq_len=16) == 311_334_912
    llama = AutoConfig.for_model(
        "llama",
        num_hidden_layers=1,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        use_cache=False,
    )
    assert flops_per_batch(llama, batch_size=2, seq_len=16) > 0


def test_gradient_accumulation_from_global_batch_size() -> None:
    assert gradient_accumulation(48, micro_batch_size=12, world_size=2) == 2
    assert gradient_accumulation(12, micro_batch_size=12, world_size=1) == 1
    with pytest.raises(LMTrainError, match=r"global_batch_size=50 .* 24"):
        gradient_accumulation(50, micro_batch_size=12, world_size=2)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(
        "".join(f"def f{i}(x):\n    return x + {i}\n\nclass C{i}:\n    pass\n" for i in range(200))
    )
    return path


def test_global_batch_size_accumulates_micro_batches(compose_cfg, small_corpus: Path) -> None:
    cfg = compose_cfg(
        "data=text_files",
        f"data.source.path={small_corpus}",
        "data.tokenizer.kind=char",
        "logger=none",
        "global_batch_size=8",
        "data.batch_size=4",
        "trainer.max_steps=3",
    )
    metrics = train(cfg)
    assert metrics["trainer/global_step"] == 3
    assert metrics["tokens_seen"] == 3 * 8 * cfg.data.block_size


def test_compiled_model_checkpoint_loads_into_an_uncompiled_model(
    compose_cfg, small_corpus: Path, tmp_path: Path
) -> None:
    cfg = compose_cfg(
        "data=text_files",
        f"data.source.path={small_corpus}",
        "data.tokenizer.kind=char",
        "logger=none",
        "model.compile=true",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
    )
    train(cfg)
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = load_torch_file(path)["state_dict"]
    assert not [k for k in state if "_orig_mod" in k]
    model, _, _ = model_from_checkpoint(path)  # strict load into a plain HF model
    assert not hasattr(model, "_orig_mod") and model._compiled_call_impl is None
    torch.testing.assert_close(model.lm_head.weight, state["model.lm_head.weight"])
