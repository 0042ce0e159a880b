"""`trainer=fsdp`: the block class from the HF model, its wrap and checkpointing policies, and
sharded checkpoints consolidated into one file.

FSDP itself needs GPUs (PyTorch refuses a CPU-only FSDP unit), so on CPU the policies are applied
to the real models the way FSDP applies them, activation checkpointing is run for real (it needs
no process group), and the consolidation reads a sharded checkpoint written by the same
torch.distributed.checkpoint call Lightning's FSDPStrategy makes. The last test trains with FSDP
for real where a GPU is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import pytest
import torch
from lightning.fabric.strategies.fsdp import (
    _distributed_checkpoint_save,
    _setup_activation_checkpointing,
)
from lightning.pytorch.strategies import FSDPStrategy
from transformers.models.gpt2.modeling_gpt2 import GPT2Block
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from lmtrain.errors import LMTrainError, find_cause
from lmtrain.models.checkpoint import SHARDED_META_FILE, checkpoint_model
from lmtrain.models.hf import decoder_blocks
from lmtrain.strategies import block_classes, consolidate
from tests.checkpoints import TINY_GPT2, TINY_LLAMA
from tests.helpers import one_file_corpus, run_cli, tiny_cli

MODELS = {"gpt2": (TINY_GPT2, GPT2Block), "llama": (TINY_LLAMA, LlamaDecoderLayer)}


def fsdp_setup(compose_cfg, arch: str, *overrides: str):
    """The FSDP strategy built from `trainer=fsdp` and the tiny model it is meant for."""
    cfg = compose_cfg("trainer=fsdp", *MODELS[arch][0], *overrides, tiny=False)
    strategy = hydra.utils.instantiate(cfg.trainer.strategy)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    return strategy, module


@pytest.mark.parametrize("arch", MODELS)
def test_fsdp_wraps_each_transformer_block_and_keeps_embeddings_tied(
    compose_cfg, arch: str
) -> None:
    strategy, module = fsdp_setup(compose_cfg, arch)
    block = MODELS[arch][1]
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy.name == "FULL_SHARD"
    assert strategy._state_dict_type == "full"
    assert strategy._activation_checkpointing_kwargs == {}

    # The units FSDP would make below the root (the LightningModule): one per block, no other.
    policy = strategy.kwargs["auto_wrap_policy"]
    units = policy._run_policy(module, ignored_modules=set(), root_kwargs={})
    blocks = list(decoder_blocks(module.model))
    assert set(units) == set(blocks) and all(isinstance(b, block) for b in blocks)
    # Embedding table and output layer stay in the root unit, so they stay one parameter.
    hf = module.model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight


def test_block_class_of_a_pretrained_folder_comes_from_its_config(tmp_path: Path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(hidden_size=32, num_hidden_layers=1).save_pretrained(tmp_path)
    assert block_classes(pretrained=str(tmp_path)) == {LlamaDecoderLayer}


def test_activation_checkpointing_wraps_the_blocks_and_keeps_the_gradients(compose_cfg) -> None:
    strategy, module = fsdp_setup(
        compose_cfg, "gpt2", "trainer.strategy.activation_checkpointing=true"
    )
    reference = hydra.utils.instantiate(compose_cfg("model=gpt2_tiny", *TINY_GPT2).model)
    reference.load_state_dict(module.state_dict())
    _setup_activation_checkpointing(module, strategy._activation_checkpointing_kwargs)

    wrapped = [type(m).__name__ for m in module.model.modules() if "Checkpoint" in type(m).__name__]
    assert len(wrapped) == module.model.config.n_layer
    windows = torch.randint(0, module.model.config.vocab_size, (2, 17))
    for model in (module, reference):
        model.train()
        model.loss(windows).backward()
    for (name, a), b in zip(module.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_bad_fsdp_settings_are_refused_in_one_line(compose_cfg) -> None:
    cfg = compose_cfg("trainer=fsdp", "trainer.strategy.sharding_strategy=ZERO9")
    with pytest.raises(Exception) as err:  # Hydra wraps it; the CLI prints the LMTrainError
        hydra.utils.instantiate(cfg.trainer.strategy)
    assert str(find_cause(err.value, LMTrainError)) == (
        "trainer.strategy.sharding_strategy='ZERO9' is unknown: use one of FULL_SHARD, "
        "SHARD_GRAD_OP, HYBRID_SHARD, NO_SHARD"
    )
    with pytest.raises(LMTrainError, match=r"model_type='t5' is not a transformers causal LM"):
        block_classes("t5")  # an encoder-decoder: no AutoModelForCausalLM class


def test_sharded_checkpoint_consolidates_into_one_loadable_file(
    compose_cfg, tmp_path: Path
) -> None:
    # A sharded checkpoint as FSDPStrategy(state_dict_type="sharded") writes one: the tensors
    # through torch.distributed.checkpoint, everything else in meta.pt.
    corpus = one_file_corpus(tmp_path / "corpus")
    cfg = compose_cfg(*TINY_GPT2, "data=text_files", f"data.source.path={corpus}")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    module = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    optimizer = torch.optim.AdamW(module.parameters())
    module.loss(torch.randint(0, len(datamodule.tokenizer), (2, 17))).backward()
    optimizer.step()
    folder = tmp_path / "checkpoints" / "last.ckpt"
    _distributed_checkpoint_save({"model": module.state_dict()}, folder)
    meta = {"global_step": 7, "epoch": 0, "pytorch-lightning_version": "2.6"}
    module.on_save_checkpoint(meta)  # the lmtrain extras: HF config, tokenizer, run config
    torch.save(meta, folder / SHARDED_META_FILE)

    merged = consolidate(folder)
    assert merged == tmp_path / "checkpoints" / "last.consolidated.ckpt"
    checkpoint = torch.load(merged, weights_only=True)
    assert checkpoint["global_step"] == 7
    for name, tensor in module.state_dict().items():
        torch.testing.assert_close(checkpoint["state_dict"][name], tensor, msg=name)
    loaded = checkpoint_model(merged)  # what lmtrain.eval / generate / export read
    hf = loaded.model
    assert hf.get_output_embeddings().weight is hf.get_input_embeddings().weight
    torch.testing.assert_close(hf.lm_head.weight, module.model.lm_head.weight)

    with pytest.raises(LMTrainError, match="is not a sharded checkpoint folder"):
        consolidate(tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP needs a GPU")
def test_fsdp_trains_on_gpus_and_its_sharded_checkpoint_evaluates(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir),
        "trainer=fsdp",
        f"trainer.devices={torch.cuda.device_count()}",
        "trainer.accelerator=gpu",
        "trainer.strategy.activation_checkpointing=true",
        "trainer.strategy.state_dict_type=sharded",
        f"hydra.run.dir={run}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt" / SHARDED_META_FILE).is_file()
    merged = consolidate(run / "checkpoints" / "last.ckpt")
    evaluated = run_cli(
        "eval", f"ckpt_path={merged}", f"hydra.run.dir={tmp_path / 'eval'}",
        f"paths.data_dir={data_dir}", "trainer.accelerator=gpu",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained = json.loads((run / "metrics.json").read_text())["val/loss"]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/loss"] == (
        pytest.approx(trained, rel=1e-2)  # bf16 autocast in both
    )
