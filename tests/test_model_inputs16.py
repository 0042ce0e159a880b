"""Models that were measured wrong or refused with a traceback or wrong advice (red team model16):

- under `trainer.precision=bf16-true` Lightning turned the validation metrics' running sums into
  bf16, whose sums stall: a whole-split eval reported val/loss 7.75 for a model of 4.08;
- eval, generate and export took an encoder (BERT) folder that training refuses, and eval
  reported the near-zero loss of a model that reads the answer;
- `model.attn_implementation=flex_attention` was a traceback from the FLOP count, then from the
  first backward on the CPU;
- an encoder-decoder (T5) folder was "could not be loaded" with advice to pass what was passed;
- a folder whose own tokenizer outgrows its embeddings was told to use its own tokenizer.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import (
    AutoConfig,
    AutoTokenizer,
    BertConfig,
    BertLMHeadModel,
    GPT2Config,
    GPT2LMHeadModel,
    T5Config,
    T5ForConditionalGeneration,
)

from lmtrain.models import CausalLMModule
from lmtrain.models.flops import flops_per_batch
from lmtrain.models.hf import build_causal_lm
from lmtrain.models.model_folder import model_from_folder
from lmtrain.models.pretrained import load_weights
from tests.helpers.assertions import assert_one_line_error, refusal
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_LLAMA, TINY_RUN
from tests.helpers.corpora import one_file_corpus
from tests.helpers.pretrained import save_tiny_pretrained, tiny_bpe
from tests.helpers.runs import eval_tiny


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("corpus16"))


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A tiny random GPT-2 and its 400-token BPE, as save_pretrained writes them."""
    return save_tiny_pretrained(tmp_path_factory.mktemp("gpt2"), [corpus.read_text()])


def save_with_bpe(model: torch.nn.Module, folder: Path, corpus: Path) -> Path:
    """`model` and a 400-token BPE of `corpus` saved into `folder`."""
    model.save_pretrained(folder)
    tiny_bpe([corpus.read_text()], 400).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """An encoder with an LM head (is_decoder=False: it reads the whole window); untrained, as
    the refusal needs no training."""
    config = BertConfig(
        num_hidden_layers=1, num_attention_heads=2, hidden_size=32, intermediate_size=64,
        max_position_embeddings=64, vocab_size=400, is_decoder=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return save_with_bpe(BertLMHeadModel(config), tmp_path_factory.mktemp("bert"), corpus)


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    config = T5Config(num_layers=1, num_heads=2, d_model=32, d_ff=64, d_kv=16, vocab_size=400)
    model = T5ForConditionalGeneration(config)
    return save_with_bpe(model, tmp_path_factory.mktemp("t5"), corpus)


def pretrained_run(folder: Path, corpus: Path, tmp_path: Path, *overrides: str) -> list[str]:
    """lmtrain.train overrides that fine-tune `folder` with its own tokenizer on `corpus`."""
    return [
        "model=pretrained",
        f"model.pretrained={folder}",
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=pretrained",
        f"data.tokenizer.name={folder}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        *TINY_RUN,
        *overrides,
    ]


# -- H1: validation metrics under bf16-true ------------------------------------------------------
def test_a_bf16_true_eval_of_many_windows_gives_the_32_true_loss(
    gpt2_folder: Path, corpus: Path, tmp_path: Path, data_dir: Path
) -> None:
    """~500 val windows, one a batch: bf16 sums stall at 256 windows (7.75 for 4.08 before)."""
    data = ["data=text_files", f"data.source.path={corpus}", "data.block_size=1"]
    data.append("data.batch_size=1")
    losses = {}
    for precision in ("32-true", "bf16-true"):
        out = tmp_path / precision
        metrics = eval_tiny(gpt2_folder, out, data_dir, *data, f"trainer.precision={precision}")
        assert metrics["val/tokens"] > 400, metrics  # one target a window: over 400 windows
        losses[precision] = metrics["val/loss"]
    assert losses["bf16-true"] == pytest.approx(losses["32-true"], rel=0.02), losses


def test_validation_under_bf16_true_sums_loss_and_bits_per_byte_in_float32(
    gpt2_folder: Path, corpus: Path
) -> None:
    """The module's own validation (fit's too): val/loss and val/bpb (BitsPerByte's sum of
    nats) of 600 one-window batches, bf16-true against 32-true."""
    loaded = model_from_folder(gpt2_folder)
    ids = loaded.tokenizer(corpus.read_text()[:8000]).input_ids
    windows = torch.tensor(ids[: 600 * 3]).view(600, 3)
    results = {}
    for precision in ("32-true", "bf16-true"):
        module = CausalLMModule(model=copy.deepcopy(loaded.model), tokenizer=loaded.tokenizer)
        trainer = Trainer(
            accelerator="cpu", precision=precision, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        loader = torch.utils.data.DataLoader(windows, batch_size=1)
        (metrics,) = trainer.validate(module, dataloaders=loader, verbose=False)
        assert module.val_loss.mean_value.dtype == torch.float32
        assert module.val_bpb.nats.dtype == torch.float32 and module.val_bpb.n_bytes.dtype == (
            torch.int64
        )
        results[precision] = metrics
    for name in ("val/loss", "val/bpb"):
        assert results["bf16-true"][name] == pytest.approx(results["32-true"][name], rel=0.02)


# -- H2: an encoder folder in eval, generate and export ------------------------------------------
def test_eval_generate_and_export_refuse_an_encoder_folder(
    bert_folder: Path, corpus: Path, tmp_path: Path
) -> None:
    expected = (
        f"error: ckpt_path={str(bert_folder)!r} attends to later tokens (an encoder with an LM "
        "head), so a next-token loss would read the answer: pass a decoder model (gpt2, llama, "
        "mistral, qwen2, ...)"
    )
    data = ["data=text_files", f"data.source.path={corpus}", "data.block_size=32"]
    out = tmp_path / "exported"
    commands = {
        "eval": [*data, f"paths.data_dir={tmp_path / 'data'}"],
        "generate": ["prompt=Hello", "max_new_tokens=4"],
        "export": [f"out_dir={out}"],
    }
    for tool, overrides in commands.items():
        run = [f"ckpt_path={bert_folder}", f"hydra.run.dir={tmp_path / tool}", *overrides]
        result = run_cli(tool, *run, f"paths.log_dir={tmp_path / 'logs'}")
        assert assert_one_line_error(result) == expected, tool
        assert not (tmp_path / tool / "metrics.json").exists()
    assert not out.exists()


# -- M3: flex_attention --------------------------------------------------------------------------
def test_flops_of_a_flex_attention_model_are_counted_as_sdpa_and_its_config_kept() -> None:
    llama = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2}
    sdpa = AutoConfig.for_model("llama", **llama, intermediate_size=64)
    flex = copy.deepcopy(sdpa)
    flex._attn_implementation = "flex_attention"
    assert flops_per_batch(flex, batch_size=2, seq_len=16) == flops_per_batch(sdpa, 2, 16)
    assert flex._attn_implementation == "flex_attention"  # the training model's, untouched


def test_flex_attention_training_on_the_cpu_is_one_line(corpus: Path, tmp_path: Path) -> None:
    """It has no backward on the CPU: refused before the first step, not a traceback."""
    result = run_cli(
        "train",
        *TINY_LLAMA,
        *TINY_RUN,
        "model.attn_implementation=flex_attention",
        "data=text_files",
        "data.tokenizer.kind=char",
        f"data.source.path={corpus}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
    )
    assert assert_one_line_error(result) == (
        "error: model.attn_implementation='flex_attention' cannot train on the CPU (PyTorch's "
        "FlexAttention has no backward there): pass model.attn_implementation=sdpa, or train on "
        "a GPU"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()
    # Refused by the config checks, before the corpus is tokenized (it was at setup, after).
    assert not (tmp_path / "data").exists()


# -- M4: an encoder-decoder folder ---------------------------------------------------------------
def test_an_encoder_decoder_folder_is_named_as_such_by_train_and_eval(
    t5_folder: Path, corpus: Path, tmp_path: Path
) -> None:
    kind = (
        "(model_type 't5') has no causal LM in transformers (an encoder or encoder-decoder "
        "model): pass a decoder model (gpt2, llama, mistral, qwen2, ...)"
    )
    result = run_cli("train", *pretrained_run(t5_folder, corpus, tmp_path))
    assert assert_one_line_error(result) == f"error: model.pretrained={str(t5_folder)!r} {kind}"
    message = refusal(lambda: model_from_folder(t5_folder))
    assert message == f"ckpt_path={str(t5_folder)!r} {kind}"


def test_a_folder_that_does_not_load_for_another_reason_keeps_the_general_line(
    gpt2_folder: Path, tmp_path: Path
) -> None:
    """A config.json without model_type: no kind to name, the general line stands."""
    folder = tmp_path / "no-type"
    folder.mkdir()
    config = json.loads((gpt2_folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    message = refusal(lambda: load_weights(folder, "subject", "advice", "damaged"))
    assert message.startswith("subject could not be loaded (") and message.endswith("): advice")


# -- L5: a folder whose own tokenizer outgrows its embeddings ------------------------------------
def test_a_folder_whose_tokenizer_outgrows_its_embeddings_is_told_so(
    corpus: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "small-vocab"
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=200, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    save_with_bpe(GPT2LMHeadModel(config), folder, corpus)
    tokens = len(AutoTokenizer.from_pretrained(folder))
    assert tokens > 200
    message = refusal(lambda: build_causal_lm(None, None, str(folder), "sdpa", vocab_size=tokens))
    assert message == (
        f"model.pretrained={str(folder)!r} holds a tokenizer of {tokens} tokens but embeds only "
        "200: its tokenizer files and weights do not match; copy the whole folder again "
        "(tokenizer and weights from one save_pretrained or lmtrain.export), or use a data "
        "tokenizer of at most 200 tokens"
    )


def test_a_folder_whose_own_tokenizer_fits_keeps_the_advice_to_use_it(gpt2_folder: Path) -> None:
    """Another, larger data tokenizer: the folder's own one fits, so it is named."""
    own = len(AutoTokenizer.from_pretrained(gpt2_folder))  # its embeddings' size too
    more = own + 100
    message = refusal(lambda: build_causal_lm(None, None, str(gpt2_folder), "sdpa", more))
    assert message == (
        f"the tokenizer has {more} tokens but model.pretrained={str(gpt2_folder)!r} embeds only "
        f"{own}: use the model's own tokenizer (data.tokenizer.kind=pretrained "
        f"data.tokenizer.name={gpt2_folder}), or a data tokenizer of at most {own} tokens"
    )
