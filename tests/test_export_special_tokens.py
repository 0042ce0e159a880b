"""An export used by plain transformers does what lmtrain does with the checkpoint.

Found by a red team: a pretrained tokenizer that adds `<s>` to every text (Llama's
TemplateProcessing) kept doing so in the export, so `tokenizer(prompt)` put a token before the
prompt that the fine-tuned model never saw at a window's start (lmtrain encodes text with
`add_special_tokens=False`), and plain greedy text differed from `lmtrain.generate greedy=true`.
LoRA on the embedding of an untied model crashed the export; `+generation.max_length` was
overwritten by the context; a model trained from scratch on short windows was given 200 new
tokens by default, far past what it learned.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from lmtrain.errors import LMTrainError
from lmtrain.generate import generate
from lmtrain.models import export_folder
from lmtrain.models.checkpoint import LoadedModel, load_model
from lmtrain.models.tokenizer_digest import same_encoding
from lmtrain.train import train
from tests.helpers import ROOT
from tests.helpers.compose import TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.pretrained import EOS, new_text
from tests.helpers.runs import export_tiny

BOS = "<s>"
PROMPT = "The cat"
# export.yaml's generation settings, as lmtrain.export passes them on.
DEFAULTS = {"do_sample": True, "temperature": 0.8, "top_k": 50, "max_new_tokens": 200}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random untied Llama whose BPE adds `<s>` (id 0) before every text, as Llama's."""
    folder = tmp_path_factory.mktemp("bos-llama")
    texts = [p.read_text() for p in write_corpus(folder.parent / "pretrain", seed=5).iterdir()]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=[BOS, EOS], initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    bpe.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=BOS, eos_token=EOS)
    assert tokenizer(PROMPT).input_ids[0] == 0
    config = LlamaConfig(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32,
        intermediate_size=64, max_position_embeddings=64, vocab_size=len(tokenizer),
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def finetune(base: Path, run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> Path:
    """A few steps of `experiment=finetune_gpt2` on `base`; the run's last.ckpt."""
    cfg = compose(
        "train",
        run_dir,
        data_dir,
        "experiment=finetune_gpt2",
        f"model.pretrained={base}",
        f"data.source.path={corpus}",
        *TINY_RUN,
        "model.optimizer.lr=3e-3",
        "model.scheduler.num_warmup_steps=1",
        "callbacks.text_samples=null",
        "logger=none",
        *overrides,
    )
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def test_plain_transformers_tokenizes_and_generates_as_lmtrain_generate(
    base: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, data_dir: Path, capsys
) -> None:
    ckpt = finetune(base, tmp_path / "run", data_dir, new_text(tmp_path_factory))
    folder = export_tiny(ckpt, tmp_path / "hf", data_dir)

    cfg = compose(
        "generate", tmp_path / "gen", data_dir, f"ckpt_path={ckpt}", f"prompt='{PROMPT}'",
        "greedy=true", "max_new_tokens=20",
    )  # fmt: skip
    capsys.readouterr()
    generate(cfg)
    by_lmtrain = capsys.readouterr().out

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=20, do_sample=False)
    plain = PROMPT + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert plain + "\n" == by_lmtrain

    training_tokenizer = load_model(ckpt).tokenizer
    trained = training_tokenizer(PROMPT, add_special_tokens=False).input_ids
    assert tokenizer(PROMPT).input_ids == trained  # no <s>: training never put one there
    # eval of the export reuses the run's token cache: only the post-processor differs
    assert same_encoding(training_tokenizer, tokenizer)
    assert training_tokenizer.backend_tokenizer.to_str() != tokenizer.backend_tokenizer.to_str()
    assert tokenizer.convert_tokens_to_ids(BOS) == 0 and tokenizer.bos_token == BOS  # kept
    assert 'tokenizer("Hello", return_tensors="pt")' in (folder / "README.md").read_text()


def test_lora_on_the_embedding_of_an_untied_model_exports_merged_and_as_adapters(
    base: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, data_dir: Path
) -> None:
    """`'Embedding' object has no attribute 'num_embeddings'`: peft's layer is no nn.Embedding."""
    lora = ["model/peft=lora", "model.peft.target_modules=[embed_tokens]", "trainer.max_steps=2"]
    ckpt = finetune(base, tmp_path / "run", data_dir, new_text(tmp_path_factory), *lora)
    merged = export_tiny(ckpt, tmp_path / "merged", data_dir)
    adapters = export_tiny(ckpt, tmp_path / "adapters", data_dir, "merge=false")
    ids = torch.arange(3, 40).unsqueeze(0)
    with torch.inference_mode():
        expected = load_model(ckpt).model.eval()(input_ids=ids).logits
        from_merged = AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits
        from_adapters = load_model(adapters).model.eval()(input_ids=ids).logits
    torch.testing.assert_close(from_merged, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(from_adapters, expected, rtol=1e-4, atol=1e-5)


def loaded(base: Path, pretrained: str | None, block_size: int = 32) -> LoadedModel:
    """`base` as an export loads a checkpoint of a run with these settings."""
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    run_config = {"model": {"pretrained": pretrained}, "data": {"block_size": block_size}}
    return LoadedModel(model, AutoTokenizer.from_pretrained(base), run_config)


def test_a_max_length_given_wins_over_the_default_max_new_tokens(base: Path) -> None:
    """`+generation.max_length=5` was saved as max_length=64 (the context)."""
    tuned = loaded(base, str(base))
    config = export_folder.tried_generation_config(tuned, {**DEFAULTS, "max_length": 5})
    assert (config.max_length, config.max_new_tokens) == (5, None)
    config = export_folder.tried_generation_config(tuned, {**DEFAULTS, "max_length": 500})
    assert (config.max_length, config.max_new_tokens) == (64, None)  # GPT-2 cannot run past it
    with pytest.raises(LMTrainError, match=r"max_length=5 and .*max_new_tokens=10 .*: set one"):
        export_folder.tried_generation_config(
            tuned, {**DEFAULTS, "max_length": 5, "max_new_tokens": 10}
        )
    export_yaml = OmegaConf.load(ROOT / "configs" / "export.yaml")
    from lmtrain.models.export_tokenizer import EXPORT_NEW_TOKENS  # what a max_length replaces

    assert export_yaml.generation.max_new_tokens == EXPORT_NEW_TOKENS


def test_a_model_trained_from_scratch_generates_no_further_than_its_windows(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="lmtrain.models.export_tokenizer"):
        config = export_folder.tried_generation_config(loaded(base, None), DEFAULTS)
    assert (config.max_length, config.max_new_tokens) == (32, None)
    assert "max_new_tokens=200 saved as max_length=32" in caplog.text
    assert "data.block_size" in caplog.text
    # Fine-tuned, or trained on whole contexts: the context, as before.
    assert export_folder.tried_generation_config(loaded(base, str(base)), DEFAULTS).max_length == 64
    assert export_folder.tried_generation_config(loaded(base, None, 64), DEFAULTS).max_length == 64
    assert (
        export_folder.tried_generation_config(
            loaded(base, None), {"max_new_tokens": 20}
        ).max_new_tokens
        == 20
    )
