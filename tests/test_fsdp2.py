"""`trainer=fsdp_cpu`: FSDP2 on two gloo processes trains as one process does, and its sharded
checkpoints resume, consolidate, evaluate and export.

Every run is the real CLI (Lightning's launcher re-runs the command for rank 1). The probe of
tests/helpers/sharded_runs.py is added like any callback and writes what the tests compare.
Module-scoped fixtures run each configuration once: one process with a batch of 8, FSDP and DDP
on two ranks with a batch of 4 each (the same global batch), 20 steps, a gradient clip that
bites on every step. The runs save checkpoints at steps 10 and 20, where the resumes start.
Killed runs: tests/test_fsdp2_kill.py; the pieces that need one process: test_fsdp2_pieces.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from lmtrain.strategies import consolidate
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import (
    eval_tiny,
    export_tiny,
    model_from_checkpoint,
    reload_in_fresh_process,
)
from tests.helpers.sharded_runs import results

STEPS = 20
CLIP = 0.1  # the unclipped global norm is 1.0 to 2.1 on the steps of these runs (asserted > 0.2)
# The same run on any number of ranks: a tiny GPT-2 from a pretrained folder (see `corpus`), 20
# steps, validations (2 batches) at steps 10 and 20 and a final one on the whole val split (57
# windows: 29 and 28 per rank, 8 and 7 batches of 4, so FSDP needs its padding), checkpoints at
# steps 10 and 20 besides last.ckpt.
RUN = [
    "model=pretrained",
    "data=text_files",
    "data.tokenizer.kind=char",
    "data.block_size=32",
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    f"trainer.gradient_clip_val={CLIP}",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "samples.max_new_tokens=8",
    "model.optimizer.lr=3e-3",
    "model.scheduler.num_warmup_steps=2",
    "logger=none",
    "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
    "+callbacks.steps.dirpath=${paths.output_dir}/checkpoints",
    "+callbacks.steps.filename='step={step}'",
    "+callbacks.steps.auto_insert_metric_name=false",
    "+callbacks.steps.every_n_train_steps=10",
    "+callbacks.steps.save_top_k=-1",
    "+callbacks.probe._target_=tests.helpers.sharded_runs.Probe",
    "+callbacks.probe.path=${paths.output_dir}/probe.pt",
]
ONE_PROCESS = ["trainer=cpu", "data.batch_size=8"]
FSDP = ["trainer=fsdp_cpu", "data.batch_size=4"]
DDP = ["trainer=ddp_cpu", "data.batch_size=4"]


def train(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str):
    """`python -m lmtrain.train` of RUN on `corpus` in `run_dir`, `overrides` added."""
    pretrained = corpus.parent / "pretrained"
    paths = [f"data.source.path={corpus}", f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    paths.append(f"model.pretrained={pretrained}")
    env = {"OMP_NUM_THREADS": "1"}
    return run_cli("train", *RUN, *paths, *overrides, env=env, timeout=600)


def trained(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> Path:
    out = train(run_dir, data_dir, corpus, *overrides)
    assert out.returncode == 0, out.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus, and beside it `pretrained/`: a tiny GPT-2 (fresh weights) as save_pretrained
    writes it, with room for the corpus's characters."""
    path = one_file_corpus(tmp_path_factory.mktemp("fsdp2_corpus"))
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=128, bos_token_id=0,
        eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu",
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(path.parent / "pretrained")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, corpus: Path, data_dir: Path) -> dict[str, Path]:
    """One process, FSDP and DDP on two ranks: the same run, started at once (2 cores), from a
    pretrained folder: ranks > 0 build the model on the meta device and get rank 0's weights."""
    root = tmp_path_factory.mktemp("fsdp2_runs")
    settings = {"one": ONE_PROCESS, "fsdp": FSDP, "ddp": DDP}

    def run(name: str) -> Path:
        return trained(root / name, data_dir, corpus, *settings[name])

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(settings, pool.map(run, settings), strict=True))


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


def without_key_bias(name: str, tensor: torch.Tensor, width: int = 32) -> torch.Tensor:
    """The tensor, less the attention key third of a GPT-2 `c_attn.bias` (see below)."""
    if not name.endswith("attn.c_attn.bias"):
        return tensor
    return torch.cat([tensor[:width], tensor[2 * width :]])


def assert_same_training(
    run: dict[str, Any], reference: dict[str, Any], steps: int = STEPS
) -> None:
    """Losses of the last `steps` steps (a resumed run's) within 1e-6 relative, every weight
    within 1e-5 relative (max |a - b| / max |b| per tensor), except the attention key bias.

    The key bias adds the same amount to every attention score of a query, and softmax ignores
    that: its true gradient is exactly 0, and the model's output does not depend on it. What is
    computed is rounding noise (~1e-11) that differs with the order of the reductions (one
    process, or a reduce-scatter over two ranks), and AdamW divides it by its own running size,
    so the slice takes steps in a direction set by the noise, each at most lr * noise / eps
    (eps = 1e-8): ~3e-6 per step here. It is compared in absolute terms (1e-5); it starts at 0.
    """
    assert len(run["losses"]) == steps and len(reference["losses"]) == STEPS
    assert run["losses"] == pytest.approx(reference["losses"][-steps:], rel=1e-6)
    assert run["weights"].keys() == reference["weights"].keys()
    for name, expected in reference["weights"].items():
        got = run["weights"][name]
        difference = relative_difference(
            without_key_bias(name, got), without_key_bias(name, expected)
        )
        assert difference < 1e-5, f"{name}: {difference:.2e}"
        if name.endswith("attn.c_attn.bias"):
            key = slice(32, 64)
            assert (got[key] - expected[key]).abs().max() < 1e-5, name


@pytest.mark.slow
def test_fsdp_and_ddp_on_two_ranks_train_as_one_process_does(runs: dict[str, Path]) -> None:
    """Windows, loss, gradient clipping, weight decay, val/loss: the same with FSDP (and DDP) on
    two gloo ranks of 4 windows as in one process of 8, 20 steps from the same pretrained
    weights, which rank 1 never read (it got them from rank 0).

    Measured: losses within 1.2e-7 relative, weights within 6.3e-7 (FSDP) and 5.4e-7 (DDP),
    the key-bias slice within 3.4e-7 absolute, val/loss within 6.4e-8. The clip (0.1) bites on
    every step (norms 1.0 to 2.1).
    """
    one, fsdp, ddp = (results(runs[name]) for name in ("one", "fsdp", "ddp"))
    assert min(one["norms"]) > 2 * CLIP
    assert fsdp["norms"] == pytest.approx(one["norms"], rel=1e-5)
    assert_same_training(fsdp, one)
    assert_same_training(ddp, one)
    # The whole val split, 57 windows, padded for FSDP to 29 on each rank (weighted 0).
    for run in (fsdp, ddp):
        assert run["metrics"]["val/loss"] == pytest.approx(one["metrics"]["val/loss"], rel=1e-6)
    # Weight decay: the parameters with 2 or more dimensions in the unsharded model, by name.
    unsharded = {name.removeprefix("model."): w for name, w in one["weights"].items()}
    matrices = {name for name, w in unsharded.items() if w.dim() >= 2} - {"lm_head.weight"}
    assert set(fsdp["groups"]["decay"]) == matrices  # lm_head.weight is wte.weight (tied)
    assert set(fsdp["groups"]["no_decay"]) == set(unsharded) - matrices - {"lm_head.weight"}
    assert fsdp["groups"] == one["groups"]
    # One FSDP unit per block, then the root, whose tied output layer is still the token table.
    assert fsdp["units"] == ["", "transformer.h.0", "transformer.h.1"] and fsdp["tied"]
    # model.pretrained: read by rank 0 alone; rank 1 built it on the meta device.
    assert one["on_meta"] == [False] and fsdp["on_meta"] == ddp["on_meta"] == [False, True]
    # Text samples are skipped under FSDP (rank 0 generating alone would wait for the others).
    assert not (runs["fsdp"] / "samples.txt").exists() and (runs["one"] / "samples.txt").exists()


@pytest.mark.slow
def test_sharded_checkpoint_consolidates_into_a_file_that_evaluates_and_exports(
    runs: dict[str, Path], data_dir: Path, tmp_path: Path
) -> None:
    fsdp, one = results(runs["fsdp"]), results(runs["one"])
    last = runs["fsdp"] / "checkpoints" / "last.ckpt"
    assert {p.name for p in last.iterdir()} == {
        ".metadata",
        "__0_0.distcp",
        "__1_0.distcp",
        "meta.pt",
    }
    assert not list(last.parent.glob(".*"))  # no temporary or previous folder left behind
    out = subprocess.run(
        [sys.executable, "-m", "lmtrain.strategies", "consolidate", str(last)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    merged = Path(out.stdout.strip())
    assert merged == last.with_name("last.consolidated.ckpt")

    # The layout of a one-device checkpoint: the same weights, the optimizer state keyed by
    # position over the same groups.
    checkpoint = torch.load(merged, weights_only=True)
    single = torch.load(runs["one"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == single["global_step"] == STEPS
    for name, weight in fsdp["weights"].items():
        assert torch.equal(checkpoint["state_dict"][name], weight), name
    (state,), (single_state,) = checkpoint["optimizer_states"], single["optimizer_states"]
    assert state["param_groups"] == single_state["param_groups"]
    assert state["state"].keys() == single_state["state"].keys()
    for index, entry in single_state["state"].items():
        for key, value in entry.items():
            assert state["state"][index][key].shape == value.shape, (index, key)
    # lmtrain.eval on it: the val/loss of the training run's final (whole-split) validation.
    metrics = eval_tiny(merged, tmp_path / "eval", data_dir)
    assert metrics["val/loss"] == pytest.approx(fsdp["metrics"]["val/loss"], rel=1e-6)
    assert metrics["val/loss"] == pytest.approx(one["metrics"]["val/loss"], rel=1e-6)
    # Its export loads in plain transformers, in a process without lmtrain.
    folder = export_tiny(merged, tmp_path / "hf", data_dir)
    loaded = model_from_checkpoint(merged)[0]
    ids = [3, 1, 4, 1, 5, 9, 2, 6]
    with torch.inference_mode():
        expected = loaded(input_ids=torch.tensor([ids])).logits[0]
    (reloaded,) = reload_in_fresh_process([(str(folder), "the ", ids, 4)]).values()
    assert reloaded["tied"]
    torch.testing.assert_close(torch.tensor(reloaded["logits"]), expected)


@pytest.mark.slow
def test_resume_on_another_world_size_or_strategy_goes_on_or_is_refused_in_one_line(
    runs: dict[str, Path], corpus: Path, data_dir: Path, tmp_path: Path
) -> None:
    """FSDP on 2 ranks -> FSDP on 1 process (the sharded folder); -> one device (its
    consolidated file); DDP -> FSDP (DDP's file). Each resumes at step 10 and ends where the
    uninterrupted run does (the first with activation checkpointing on: the same gradients).
    A sharded folder for DDP, and a global micro-batch that changes with the number of ranks,
    are refused in one line; so is nan_guard=skip under FSDP."""
    fsdp10 = runs["fsdp"] / "checkpoints" / "step=10.ckpt"
    merged10 = consolidate(fsdp10, tmp_path / "fsdp10.ckpt")
    ddp10 = runs["ddp"] / "checkpoints" / "step=10.ckpt"
    one_fsdp_process = ["trainer=fsdp_cpu", "trainer.devices=1"]
    jobs = {
        "fsdp -> 1 process": (
            *one_fsdp_process,
            "data.batch_size=8",
            f"ckpt_path='{fsdp10}'",
            "trainer.strategy.activation_checkpointing=true",
        ),
        "fsdp -> one device": (*ONE_PROCESS, f"ckpt_path='{merged10}'"),
        "ddp -> fsdp": (*FSDP, f"ckpt_path='{ddp10}'"),
        "fsdp -> ddp": (*DDP, f"ckpt_path='{fsdp10}'"),
        "fewer windows": (*one_fsdp_process, "data.batch_size=4", f"ckpt_path='{fsdp10}'"),
        "skip": (*one_fsdp_process, "model.nan_guard=skip"),
    }

    def folder(name: str) -> Path:
        return tmp_path / re.sub(r"\W+", "_", name)

    def run(name: str):
        return train(folder(name), data_dir, corpus, *jobs[name])

    with ThreadPoolExecutor(max_workers=3) as pool:
        out = dict(zip(jobs, pool.map(run, jobs), strict=True))
    for name, reference in (
        ("fsdp -> 1 process", "fsdp"),
        ("fsdp -> one device", "fsdp"),
        ("ddp -> fsdp", "ddp"),
    ):
        assert out[name].returncode == 0, f"{name}: {out[name].stderr[-3000:]}"
        resumed = results(folder(name))
        assert_same_training(resumed, results(runs[reference]), steps=STEPS - 10)
        assert resumed["checkpointing"] == (name == "fsdp -> 1 process")
    assert_one_line_error(
        out["fsdp -> ddp"], "is a sharded checkpoint folder, which only trainer=fsdp reads",
        "python -m lmtrain.strategies consolidate",
    )  # fmt: skip
    assert_one_line_error(
        out["fewer windows"], "2 rank(s) x data.batch_size=4 = 8 windows per micro-batch",
        "this run reads 1 x 4 = 4", "data.batch_size=8",
    )  # fmt: skip
    assert_one_line_error(out["skip"], "model.nan_guard=skip is not supported with trainer=fsdp")


def test_an_fsdp_run_folder_resumed_on_one_device_is_refused_before_training(
    runs: dict[str, Path], corpus: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Red team: the FSDP run's consolidated file resumed on one device in the run's own folder
    trained to its first save, which met the sharded last.ckpt folder: IsADirectoryError."""
    run = tmp_path / "fsdp_run"
    shutil.copytree(runs["fsdp"], run, ignore=shutil.ignore_patterns(".lock*"))
    # Beside it, as the default is (another test may have consolidated there already).
    checkpoints = run / "checkpoints"
    merged = consolidate(checkpoints / "last.ckpt", checkpoints / "last.merged.ckpt")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    longer = f"trainer.max_steps={STEPS + 4}"
    out = train(run, data_dir, corpus, *ONE_PROCESS, f"ckpt_path='{merged}'", longer)
    assert_one_line_error(
        out,
        f"{run / 'checkpoints' / 'last.ckpt'} is a sharded checkpoint folder (trainer=fsdp wrote "
        "it), which this run's one-file saves cannot replace",
        "or resume with trainer=fsdp",
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_a_weights_only_sharded_checkpoint_is_refused_for_resuming_by_what_it_lacks(
    corpus: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A folder saved with save_weights_only=true holds no optimizer state: resuming it was
    refused by the shards' reader, as "not a readable DCP checkpoint ... pass a checkpoint
    written by lmtrain.train", though lmtrain.train wrote it."""
    one_fsdp_process = ["trainer=fsdp_cpu", "trainer.devices=1", "data.batch_size=8"]
    weights_only = [*one_fsdp_process, "+callbacks.model_checkpoint.save_weights_only=true"]
    run = trained(tmp_path / "run", data_dir, corpus, *weights_only, "trainer.max_steps=10")
    out = train(run, data_dir, corpus, *weights_only, "ckpt_path=last")
    assert_one_line_error(
        out, "last.ckpt' lacks lr_schedulers, which resuming training needs",
        "(saved with save_weights_only?)",
    )  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="trainer=fsdp runs on GPUs")
def test_fsdp_trains_on_gpus_in_bf16_with_compiled_blocks_and_its_checkpoint_evaluates(
    corpus: Path, data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    devices = torch.cuda.device_count()
    out = train(
        run, data_dir, corpus, "trainer=fsdp", f"trainer.devices={devices}",
        f"data.batch_size={max(1, 8 // devices)}", "model.compile=true",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    merged = consolidate(run / "checkpoints" / "last.ckpt")
    metrics = eval_tiny(merged, tmp_path / "eval", data_dir, "trainer.accelerator=gpu")
    trained = results(run)["metrics"]["val/loss"]
    assert metrics["val/loss"] == pytest.approx(trained, rel=1e-2)  # bf16 blocks in training
