"""The pieces of `trainer=fsdp` that need no second process: the window stream each rank reads,
val padding, the restricted reader on the strategy's resume path, the recovery of a save killed
between its renames, the strategy's settings and its sharding, and ExactResume's gradients.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp

from lmtrain.callbacks.resume import restore_gradients
from lmtrain.data import TextDataModule
from lmtrain.data.sampler import CHUNK, ResumableWindowSampler
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.windows import PAD_TOKEN, PaddedSampler, PaddedWindows
from lmtrain.errors import LMTrainError, find_cause
from lmtrain.models.checkpoint import resolve_ckpt_path
from lmtrain.models.checkpoint_paths import previous_sharded, temporary_sharded
from lmtrain.models.module import CausalLMModule
from lmtrain.strategies.sharded_checkpoints import load_sharded, replace_folder
from tests.helpers.corpora import write_corpus
from tests.helpers.sharded_runs import lightning_meta, one_process_fsdp2


def test_ranks_read_their_shares_of_one_window_stream() -> None:
    """Rank r of w reads the r-th data.batch_size of each global micro-batch: together, what one
    process with a w times bigger batch reads, from any position (a resume on other ranks)."""
    one = ResumableWindowSampler(1000, 72, seed=3, batch_size=12)
    stream = list(one.indices(40, 72))  # 6 micro-batches of 12 from window 40 of the stream
    for world in (2, 3):
        share = 12 // world
        ranks = [
            list(
                ResumableWindowSampler(1000, 72, 3, rank, world, batch_size=share).indices(
                    40, 72 // world
                )
            )
            for rank in range(world)
        ]
        joined = [i for k in range(6) for r in ranks for i in r[k * share : (k + 1) * share]]
        assert joined == stream
    # One process draws what it always drew (the stream earlier versions gave rank 0).
    first = np.random.default_rng(np.random.SeedSequence([3, 0, 0])).integers(0, 1000, CHUNK)
    assert list(one.indices(0, 20)) == first[:20].tolist()


def test_val_windows_are_padded_to_equal_batches_and_weigh_nothing(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "docs", n_docs=1, lines=60)
    dm = TextDataModule(
        TextFilesSource(str(corpus)), {"kind": "char"}, 8, 4, cache_dir=str(tmp_path)
    )
    dm.prepare_data()
    dm.setup("validate")
    windows = dm.val_dataset
    samplers = [PaddedSampler(windows, num_replicas=3, rank=r) for r in range(3)]
    indices = [list(s) for s in samplers]
    assert len({len(s) for s in samplers}) == 1 and len(samplers[0]) == -(-len(windows) // 3)
    real = sorted(i for rank in indices for i in rank if i != len(windows))
    assert real == list(range(len(windows)))  # every window once, none repeated
    padded = PaddedWindows(windows)
    assert torch.equal(padded[len(windows)], torch.full((9,), PAD_TOKEN))

    # A batch with padding rows: its val/loss is that of its real windows, weighted by them.
    module = CausalLMModule(
        "gpt2", {"n_layer": 1, "n_head": 2, "n_embd": 16}, tokenizer=dm.tokenizer
    )
    module.eval()
    batch = torch.stack([padded[0], padded[1], padded[len(windows)]])
    with torch.no_grad():
        module.validation_step(batch, 0)
        module.validation_step(padded[len(windows)].unsqueeze(0), 1)  # padding only
        expected = module.loss(batch[:2])
    torch.testing.assert_close(module.val_loss.compute(), expected)
    assert float(module.val_loss.weight) == 2


def sharded_folder(
    folder: Path, payload: Any = None
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A sharded checkpoint folder in trainer=fsdp's layout, of a small model after one AdamW
    step; `payload` goes into the optimizer's hyperparameters (a pickled non-tensor entry)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 8)).sum().backward()
    optimizer.step()
    names = [name for name, _ in model.named_parameters()]
    state = optimizer.state_dict()
    by_name = {
        "state": {names[i]: s for i, s in state["state"].items()},
        "param_groups": [
            {**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    if payload is not None:
        by_name["param_groups"][0]["lr"] = payload
    dcp.save(
        {"state_dict": model.state_dict(), "optimizer_0": by_name},
        checkpoint_id=folder,
        no_dist=True,
    )
    torch.save(lightning_meta(1), folder / "meta.pt")
    return model, optimizer


class Payload:
    """Pickles as a call to `Path.touch(marker)`: the marker exists iff something unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_strategy_reads_sharded_folders_through_the_restricted_reader(tmp_path: Path) -> None:
    """What FSDP2Strategy.load_checkpoint runs on a folder (here in one process, on a model that
    is not sharded: the same reader and planner), on a genuine folder and a crafted one."""
    model, optimizer = sharded_folder(tmp_path / "genuine")
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    meta = load_sharded(fresh, [fresh_optimizer], tmp_path / "genuine", strict=True)
    assert meta == lightning_meta(1)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    expected = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["exp_avg"], expected)

    marker = tmp_path / "ran"
    sharded_folder(tmp_path / "crafted", Payload(marker))
    with pytest.raises(
        LMTrainError, match=r"entry optimizer_0\.param_groups\.0\.lr.*could run code"
    ):
        load_sharded(fresh, [fresh_optimizer], tmp_path / "crafted", strict=True)
    assert not marker.exists()


def test_last_is_the_previous_folder_when_a_save_died_between_its_renames(tmp_path: Path) -> None:
    checkpoints = tmp_path / "run" / "checkpoints"
    last = checkpoints / "last.ckpt"
    sharded_folder(previous_sharded(last))  # the state a kill between the two renames leaves
    assert resolve_ckpt_path("last", tmp_path / "run") == str(previous_sharded(last))
    sharded_folder(temporary_sharded(last))  # the next save, complete
    torch.save(lightning_meta(2), temporary_sharded(last) / "meta.pt")
    replace_folder(temporary_sharded(last), last)
    assert [p.name for p in checkpoints.iterdir()] == ["last.ckpt"]
    assert resolve_ckpt_path("last", tmp_path / "run") == str(last)
    assert torch.load(last / "meta.pt", weights_only=True)["global_step"] == 2


def test_gpu_config_computes_in_bf16_reduces_in_fp32_and_unknown_dtypes_are_refused(
    compose_cfg,
) -> None:
    strategy = hydra.utils.instantiate(compose_cfg("trainer=fsdp").trainer.strategy)
    assert strategy.mp_policy.param_dtype == torch.bfloat16
    assert strategy.mp_policy.reduce_dtype == torch.float32
    cfg = compose_cfg("trainer=fsdp_cpu", "trainer.strategy.param_dtype=fp8")
    with pytest.raises(Exception) as err:  # Hydra wraps it; the CLI prints the LMTrainError
        hydra.utils.instantiate(cfg.trainer.strategy)
    assert str(find_cause(err.value, LMTrainError)) == (
        "trainer.strategy.param_dtype='fp8' is unknown: use one of float32, bfloat16, "
        "float16, or null"
    )


def test_shard_compiles_each_block_in_place_then_shards_the_blocks_and_the_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """FSDP2Strategy.shard on a one-process gloo mesh (model.compile=true: each block compiled
    in place, lazily, so parameter names stay the HF ones)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from transformers import GPT2Config, GPT2LMHeadModel

    with one_process_fsdp2(monkeypatch) as strategy:
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64))
        shapes = {name: p.shape for name, p in model.named_parameters()}
        strategy.shard(model, compile_blocks=True)
        assert isinstance(model, FSDPModule)
        for block in model.transformer.h:
            assert isinstance(block, FSDPModule) and block._compiled_call_impl is not None
        assert {name: p.shape for name, p in model.named_parameters()} == shapes
        assert all(isinstance(p, DTensor) for p in model.parameters())
        assert model.lm_head.weight is model.transformer.wte.weight


def test_saved_gradients_go_back_per_rank_or_as_their_mean() -> None:
    """ExactResume: DDP ranks as many as saved get their own partial sums; on another number of
    ranks each gets their mean (what the ranks add up to at the step)."""
    module = torch.nn.Linear(2, 1, bias=False)
    saved = [{"weight": torch.tensor([[1.0, 2.0]])}, {"weight": torch.tensor([[3.0, 6.0]])}]
    restore_gradients(module, saved, world_size=2, rank=1)
    assert torch.equal(module.weight.grad, saved[1]["weight"])
    restore_gradients(module, saved, world_size=1, rank=0)
    assert torch.equal(module.weight.grad, torch.tensor([[2.0, 4.0]]))
