"""model/optimizer=muon: Muon for the transformer blocks' weight matrices, AdamW for the rest,
stepped as one optimizer (`CombinedOptimizer`) with a schedule per part; both states go into
checkpoints and a run killed with SIGKILL resumes bitwise."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from lmtrain.errors import LMTrainError, RankAgreedError, find_cause
from lmtrain.models import optimizers
from lmtrain.models.muon import BatchedMuon
from lmtrain.models.optimizers import CombinedOptimizer
from lmtrain.train import train
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import SHRUNK_FAST, TINY_GPT2, TINY_LLAMA
from tests.helpers.killed_runs import (
    assert_same_run,
    finish,
    kill,
    resumable_corpus,
    start,
    train_command,
    wait_for_saves,
)
from tests.helpers.sharded_runs import one_process_fsdp2

MUON = "model/optimizer=muon"


def tiny_module(compose_cfg, *overrides: str) -> Any:
    """The CausalLMModule `overrides` describe with model/optimizer=muon, built as the CLI builds
    it (without a tokenizer: the model type's default vocabulary)."""
    cfg = compose_cfg(*overrides, MUON, tiny=False)
    return hydra.utils.instantiate(cfg.model, _convert_="all")


def configured(module: Any, steps: int = 0) -> dict[str, Any]:
    """What the module's configure_optimizers returns, for `steps` optimizer steps."""
    scheduler = module.scheduler_factory if steps else None
    return optimizers.configure_optimizers(
        module.model, module.decay_names, module.optimizer_factory, scheduler, steps
    )


def group_names(optimizer: CombinedOptimizer, model: torch.nn.Module) -> dict[str, set[str]]:
    """Parameter names per group of each child optimizer: `{"muon/decay": {...}, ...}`."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {
        g["name"]: {name_of[id(p)] for p in g["params"]}
        for child in optimizer.optimizers.values()
        for g in child.param_groups
    }


@pytest.mark.parametrize("adjust_lr_fn", [None, "original", "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_batched_muon_steps_as_torchs_muon_bitwise(
    adjust_lr_fn: str | None, nesterov: bool
) -> None:
    """Orthogonalizing same-shaped matrices as one batch changes the kernel calls, not the
    arithmetic: 4 steps of BatchedMuon and torch.optim.Muon on a 4-layer Llama's block shapes
    (square, tall, wide) give equal weights and state, and the state loads into either class."""
    torch.manual_seed(0)
    shapes = [(128, 128)] * 4 + [(336, 128)] * 2 + [(128, 336)] * 2 + [(48, 16)]
    ours = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = {"lr": 5e-3, "nesterov": nesterov, "adjust_lr_fn": adjust_lr_fn}
    batched, reference = BatchedMuon(ours, **settings), torch.optim.Muon(theirs, **settings)
    start = ours[0].detach().clone()
    for _ in range(4):
        for p, q in zip(ours, theirs, strict=True):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        batched.step()
        reference.step()
    assert all(torch.equal(p, q) for p, q in zip(ours, theirs, strict=True))
    assert not torch.equal(ours[0], start)  # the weights moved
    for p, q in zip(ours, theirs, strict=True):
        buffers = (batched.state[p]["momentum_buffer"], reference.state[q]["momentum_buffer"])
        assert torch.equal(*buffers)
    torch.optim.Muon(theirs, **settings).load_state_dict(batched.state_dict())


@pytest.mark.parametrize("tied", [True, False])
def test_gpt2_blocks_matrices_go_to_muon_and_the_rest_to_adamw(compose_cfg, tied: bool) -> None:
    module = tiny_module(compose_cfg, *TINY_GPT2, f"+model.config.tie_word_embeddings={tied}")
    model = module.model
    blocks = [f"transformer.h.{i}" for i in range(2)]
    matrices = {f"{b}.{m}.weight" for b in blocks for m in ("attn.c_attn", "attn.c_proj")}
    matrices |= {f"{b}.{m}.weight" for b in blocks for m in ("mlp.c_fc", "mlp.c_proj")}
    tables = {"transformer.wte.weight", "transformer.wpe.weight"}
    tables |= set() if tied else {"lm_head.weight"}  # a tied output layer is the token table
    assert ("lm_head.weight" in dict(model.named_parameters())) is not tied
    rest = {n for n, _ in model.named_parameters()} - matrices
    names = module.optimizer_factory.names(model)
    assert set(names["muon"]) == matrices and set(names["adamw"]) == rest
    optimizer = configured(module)["optimizer"]
    assert isinstance(optimizer.optimizers["muon"], BatchedMuon)
    assert isinstance(optimizer.optimizers["adamw"], torch.optim.AdamW)
    assert group_names(optimizer, model) == {
        "muon/decay": matrices,
        "adamw/decay": tables,  # embeddings and an untied output layer: decayed
        "adamw/no_decay": rest - tables,  # norms and biases
    }
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {"muon/decay": 0.1, "adamw/decay": 0.1, "adamw/no_decay": 0.0}
    # One optimizer for Lightning, whose groups are the children's own dicts.
    children = [g for c in optimizer.optimizers.values() for g in c.param_groups]
    assert all(a is b for a, b in zip(optimizer.param_groups, children, strict=True))


@pytest.mark.parametrize("tied", [True, False])
def test_llama_blocks_matrices_go_to_muon_and_the_rest_to_adamw(compose_cfg, tied: bool) -> None:
    module = tiny_module(compose_cfg, *TINY_LLAMA, f"model.config.tie_word_embeddings={tied}")
    model = module.model
    projections = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    projections += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    matrices = {f"model.layers.{i}.{p}.weight" for i in range(2) for p in projections}
    norms = {f"model.layers.{i}.{n}.weight" for i in range(2) for n in ("input_layernorm",)}
    norms |= {f"model.layers.{i}.post_attention_layernorm.weight" for i in range(2)}
    norms |= {"model.norm.weight"}
    tables = {"model.embed_tokens.weight"} | (set() if tied else {"lm_head.weight"})
    names = module.optimizer_factory.names(model)
    assert set(names["muon"]) == matrices and set(names["adamw"]) == norms | tables
    optimizer = configured(module)["optimizer"]
    assert group_names(optimizer, model) == {
        "muon/decay": matrices,
        "adamw/decay": tables,
        "adamw/no_decay": norms,
    }


def test_each_part_follows_its_own_schedule_and_its_state_round_trips(
    compose_cfg, tmp_path: Path
) -> None:
    """model.scheduler (cosine, 50 warmup steps) for Muon; AdamW's without warmup. The state of
    both optimizers and the schedule survive a weights-only file, and the next step is the same."""
    overrides = [*TINY_LLAMA, "model.optimizer.adamw.scheduler={num_warmup_steps: 0}"]

    def setup() -> tuple[Any, CombinedOptimizer, Any]:
        torch.manual_seed(0)
        module = tiny_module(compose_cfg, *overrides)
        answer = configured(module, steps=100)
        return module, answer["optimizer"], answer["lr_scheduler"]["scheduler"]

    def train_step(module: Any, optimizer: CombinedOptimizer, scheduler: Any, seed: int) -> None:
        batch = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(seed))
        module.loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    module, optimizer, scheduler = setup()
    for seed in range(10):
        train_step(module, optimizer, scheduler, seed)

    def factor(warmup: int) -> float:  # the transformers schedule's factor after 10 steps
        sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        schedule = get_cosine_with_min_lr_schedule_with_warmup(sgd, warmup, 100, min_lr_rate=0.1)
        return schedule.lr_lambdas[0](10)

    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs == {
        "muon/decay": 5e-3 * factor(50),
        "adamw/decay": 3e-3 * factor(0),
        "adamw/no_decay": 3e-3 * factor(0),
    }
    path = tmp_path / "state.pt"
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    saved = torch.load(path, weights_only=True)
    assert set(saved["optimizer"]) == {"muon", "adamw"}
    weights = {k: v.clone() for k, v in module.state_dict().items()}

    again, optimizer2, scheduler2 = setup()
    again.load_state_dict(weights)
    optimizer2.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    assert {g["name"]: g["lr"] for g in optimizer2.param_groups} == lrs
    train_step(module, optimizer, scheduler, 10)
    train_step(again, optimizer2, scheduler2, 10)
    for name, value in module.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_muon_trains_the_char_model_below_a_loss_bound(compose_cfg, play: Path) -> None:
    """experiment=shakespeare_char_fast (Muon), shrunk (1 layer, 32 wide): 60 steps on the
    play. A uniform guess costs ln 50 = 3.91 nats, character frequencies 3.28; AdamW at its 3e-3
    reaches 2.33, and 2.71 with Muon's lr at 0 (AdamW's part alone); this run 2.00 (1.96
    without the experiment's sequence-length warm-up). Every group's learning rate is logged."""
    cfg = compose_cfg(
        "experiment=shakespeare_char_fast",
        # match_rms_adamw scales the step by the matrix's size: tiny matrices want a larger lr
        "model.optimizer.muon.optimizer.lr=0.05",
        f"data.source.path={play}",
        "logger=csv",
        *SHRUNK_FAST,
        "callbacks.early_stopping=null",
        "trainer.val_check_interval=60",
        tiny=False,
    )
    metrics = train(cfg)
    assert metrics["trainer/global_step"] == 60
    assert metrics["val/loss"] < 2.2, metrics  # below AdamW's 2.33
    csv = Path(cfg.paths.output_dir) / "csv" / "metrics.csv"
    header = csv.read_text().splitlines()[0].split(",")
    assert {"train/lr/muon/decay", "train/lr/adamw/decay", "train/lr/adamw/no_decay"} <= set(header)


def test_a_part_without_parameters_is_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    """Every block frozen: Muon would train nothing."""
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, MUON, "model.freeze.first_n_blocks=2"))
    # The line names the override that drops the part.
    assert_one_line_error(result, "model.optimizer.muon", "no trainable", "'~model.optimizer.muon'")


def test_parameters_without_an_optimizer_and_stray_keys_are_refused(compose_cfg) -> None:
    # Refused as the module is built, before any training: Hydra wraps the error.
    with pytest.raises(Exception) as raised:
        tiny_module(compose_cfg, *TINY_GPT2, "~model.optimizer.adamw")
    error = find_cause(raised.value, LMTrainError)
    assert error is not None and re.search(r"get no optimizer.*params: rest", str(error))
    with pytest.raises(Exception) as raised:  # Hydra wraps the error of the class it builds
        tiny_module(compose_cfg, *TINY_GPT2, "+model.optimizer.lr=0.003")
    error = find_cause(raised.value, LMTrainError)
    assert error is not None and "model.optimizer.lr=0.003 is not" in str(error)
    assert "~model.optimizer.lr" in str(error)
    with pytest.raises(Exception) as raised:  # a part's value: refused as the parts are built
        tiny_module(compose_cfg, *TINY_GPT2, "model.optimizer.muon.optimizer.lr=-1")
    error = find_cause(raised.value, LMTrainError)
    assert error is not None, raised.value
    assert "model.optimizer.muon.optimizer.lr=-1 must be positive" in str(error)


def test_muon_is_refused_on_fsdp_sharded_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    """FSDP2Strategy.shard on a one-process gloo mesh, then model/optimizer=muon's parts."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmtrain.models.distributed import decay_parameter_names

    with one_process_fsdp2(monkeypatch) as strategy:
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=64))
        decay = decay_parameter_names(model)
        strategy.shard(model, compile_blocks=False)
        config = OmegaConf.load(ROOT / "configs" / "model" / "optimizer" / "muon.yaml")
        parts = hydra.utils.instantiate(config, _convert_="all")
        with pytest.raises(RankAgreedError, match="not supported with trainer=fsdp"):
            optimizers.configure_optimizers(model, decay, parts, None, 0)


@pytest.mark.slow
def test_muon_run_killed_and_resumed_ends_as_an_uninterrupted_one(
    tmp_path: Path, data_dir: Path
) -> None:
    """tests/helpers/killed_runs.py's run (dropout, accumulation, odd epochs, checkpoints inside
    steps) with Muon and experiment=shakespeare_char_fast's other lever, a sequence-length
    warm-up (8 to 32 tokens over 40 steps), killed with SIGKILL after its second save of
    last.ckpt, inside the warm-up."""
    corpus = resumable_corpus(tmp_path / "corpus")
    reference, run_dir, log = tmp_path / "reference", tmp_path / "run", tmp_path / "train.out"
    fast = (MUON, "model.seq_len_warmup={start:8,steps:40}")
    finish(train_command(corpus, data_dir, reference, *fast), log)
    command = train_command(corpus, data_dir, run_dir, *fast)
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = start(command, log)
    wait_for_saves(proc, last, 2)
    time.sleep(0.05)
    assert kill(proc) == -signal.SIGKILL, log.read_text()[-3000:]
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert 0 < checkpoint["global_step"] < 40  # inside the warm-up
    (state,) = checkpoint["optimizer_states"]
    assert set(state) == {"muon", "adamw"}  # both optimizers' states
    assert all("momentum_buffer" in s for s in state["muon"]["state"].values())
    assert all("exp_avg_sq" in s for s in state["adamw"]["state"].values())
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run_dir, reference)


def test_a_checkpoint_resumed_with_another_optimizer_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """Muon's checkpoint resumed with AdamW ended in torch's KeyError 'param_groups' (under
    FSDP, in the sharded reader); AdamW's resumed with Muon was refused only once the data was
    prepared. Both are refused before the model is trained, by the run config they store."""
    for trained, other in ((MUON, "model/optimizer=adamw"), ("model/optimizer=adamw", MUON)):
        name = trained.split("=")[1]
        run = tmp_path / name
        steps = ("trainer.max_steps=2", "logger=csv", "callbacks.text_samples=null")
        out = run_cli(
            "train", *tiny_cli(tmp_path, data_dir, trained, *steps), f"hydra.run.dir={run}"
        )
        assert out.returncode == 0, out.stderr[-3000:]
        last = run / "checkpoints" / "last.ckpt"
        resumed = tmp_path / f"resumed-{name}"
        cli = tiny_cli(tmp_path, data_dir, other, *steps, "trainer.max_steps=4")
        out = run_cli("train", *cli, f"ckpt_path={last}", f"hydra.run.dir={resumed}")
        assert_one_line_error(
            out, f"ckpt_path='{last}' holds the state of model.optimizer._target_=", "not of this"
        )
        assert not (resumed / "checkpoints").exists()
