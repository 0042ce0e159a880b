#!/usr/bin/env python
"""The raw training step of HF's GPT-2, as lmtrain builds it, against nanoGPT's model.

One step is what both training loops do per batch, with no Lightning and no data loading: forward,
next-token loss, backward, gradient clipping at 1.0, AdamW step, zero_grad. Both sides train the
same shape (nanoGPT's CPU baby model by default: 4 layers x 4 heads x 128 wide, block 64, batch 12,
a 65-character vocabulary, dropout 0, fp32) on the same batch of windows, with the same AdamW
(lmtrain's configured one: lr, betas, eps, weight decay on >= 2-D weights only), on
`--threads` torch threads. The HF model is built by `lmtrain.models.hf.build_causal_lm` from the
composed config (`experiment=shakespeare_char`); nanoGPT's `GPT` is imported from `--nanogpt`.

Variants of the HF side (`--variants`) show which config or module-level choice closes the gap:

    hf                  lmtrain as it is: model(input_ids=...).logits, F.cross_entropy
    hf_no_cache         the same call with use_cache=False: no DynamicCache (no K/V copies)
    hf_labels           HF's own loss: model(input_ids=x, labels=x).loss (ForCausalLMLoss)
    hf_eager            attn_implementation=eager (an explicit mask, matmul + softmax)
    hf_no_dropout       nn.Dropout(p=0) modules swapped for nn.Identity (attn_dropout kept)
    hf_tuple            return_dict=False (a tuple, no output dataclass)
    hf_best             hf_no_cache + hf_no_dropout + hf_tuple together
    hf_bf16_matmul      hf_no_cache with oneDNN's bf16 for float32 matmuls
                        (torch.backends.mkldnn.matmul.fp32_precision="bf16"; CPUs with bf16 units)

The HF model embeds one token more than the characters (lmtrain's char tokenizer adds
<|endoftext|>); both sides read the same windows of character ids.

Runs alternate in order (nanogpt, then the variants), reversed every other repeat, so a noisy
machine's drift hits all sides alike; each run builds a fresh model from the same seed and its
first `--warmup` steps are excluded. Reported: the median ms/step of each side (median over the
runs of each run's median) and its ratio to nanoGPT's. Optional, before the timed runs:

    --check      each variant's logits, loss, gradients and weights after 3 steps against the
                 `hf` side's, from the same weights ('equal' means bitwise)
    --profile N  for N steps of each side: torch.profiler's ops per step with self CPU time, the
                 ops whose calls per step differ from nanoGPT's, and the Python functions called
                 more often than in nanoGPT (cProfile); the counts do not depend on the load
    --gemm N     HF's Conv1D layout against nn.Linear's (nanoGPT) on a block's four projections,
                 forward + backward, min of N interleaved rounds, with the GFLOP/s each reaches
                 beside a large product's (what this machine's matmuls can do)

    .venv/bin/python scripts/bench_model_step.py --check --profile 5 --repeats 0   # counts only
    .venv/bin/python scripts/bench_model_step.py --steps 60 --warmup 10 --repeats 5 --gemm 20
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from transformers.pytorch_utils import Conv1D

from lmtrain.models.distributed import decay_parameter_names
from lmtrain.models.hf import build_causal_lm
from lmtrain.models.optimizers import decay_groups

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One way of running HF's GPT-2: the call, the loss and module-level choices."""

    call_kwargs: tuple[tuple[str, Any], ...] = ()
    loss: str = "ours"  # ours: F.cross_entropy on the logits; labels: HF's labels= path
    attn_implementation: str | None = None  # None: the composed config's
    strip_dropout: bool = False
    # torch.backends.mkldnn.matmul.fp32_precision while this side runs; None: torch's default
    fp32_matmul_precision: str | None = None


VARIANTS: dict[str, Variant] = {
    "hf": Variant(),
    "hf_no_cache": Variant(call_kwargs=(("use_cache", False),)),
    "hf_labels": Variant(loss="labels"),
    "hf_eager": Variant(attn_implementation="eager"),
    "hf_no_dropout": Variant(strip_dropout=True),
    "hf_tuple": Variant(call_kwargs=(("return_dict", False),)),
    "hf_best": Variant(
        call_kwargs=(("use_cache", False), ("return_dict", False)), strip_dropout=True
    ),
    "hf_bf16_matmul": Variant(call_kwargs=(("use_cache", False),), fp32_matmul_precision="bf16"),
}


def model_config(overrides: list[str]) -> dict[str, Any]:
    """The composed `model` node (model_type, config, attn_implementation, optimizer)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shakespeare_char", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[return-value]


def strip_zero_dropout(model: nn.Module) -> None:
    """Swap every nn.Dropout(p=0) for nn.Identity, except GPT-2's attn_dropout: its `.p` is
    read by the attention and handed to SDPA."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout) and child.p == 0 and child_name != "attn_dropout":
                setattr(module, child_name, nn.Identity())


def build_hf(model_cfg: dict[str, Any], variant: Variant, vocab: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_causal_lm(
        model_cfg["model_type"],
        model_cfg["config"],
        model_cfg["pretrained"],
        variant.attn_implementation or model_cfg["attn_implementation"],
        vocab_size=vocab + 1,  # lmtrain's char tokenizer: the characters, then <|endoftext|>
        eos_token_id=vocab,
    )
    if variant.strip_dropout:
        strip_zero_dropout(model)
    return model.train()


def build_nanogpt(nanogpt_dir: Path, model_cfg: dict[str, Any], block: int, vocab: int, seed: int):
    if str(nanogpt_dir) not in sys.path:
        sys.path.insert(0, str(nanogpt_dir))
    from model import GPT, GPTConfig  # nanoGPT's model.py, imported from its checkout

    c = model_cfg["config"]
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = GPT(
            GPTConfig(
                block_size=block,
                vocab_size=vocab,
                n_layer=c["n_layer"],
                n_head=c["n_head"],
                n_embd=c["n_embd"],
                dropout=0.0,
                bias=True,
            )
        )
    return model.train()


def make_step(
    side: str, model: nn.Module, model_cfg: dict[str, Any]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.optim.Optimizer]:
    """The step function (windows -> loss, weights updated) and its optimizer."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = instantiate(model_cfg["optimizer"])(
        decay_groups(named, decay_parameter_names(model))
    )
    params = [p for _, p in named]
    loss_fn = loss_function(side, model)

    def step(windows: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(windows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step, optimizer


def loss_function(side: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Windows (batch, block + 1) -> mean next-token loss, as each side computes it."""
    if side == "nanogpt":
        # nanoGPT's get_batch hands over contiguous inputs and targets: split outside the step.
        split: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def nanogpt(w: torch.Tensor) -> torch.Tensor:
            if id(w) not in split:
                split[id(w)] = (w[:, :-1].contiguous(), w[:, 1:].contiguous())
            return model(*split[id(w)])[1]

        return nanogpt
    variant = VARIANTS[side]
    kwargs = dict(variant.call_kwargs)
    if variant.loss == "labels":
        # HF's idiom: labels are the inputs, shifted inside (one target fewer per row).
        def hf_loss(w: torch.Tensor) -> torch.Tensor:
            out = model(input_ids=w[:, :-1], labels=w[:, :-1], **kwargs)
            return out[0] if isinstance(out, tuple) else out.loss

        return hf_loss

    def ours(w: torch.Tensor) -> torch.Tensor:  # lmtrain's CausalLMModule.forward and .loss
        logits = hf_logits(model, w[:, :-1], kwargs)
        return F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten())

    return ours


def hf_logits(model: nn.Module, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = model(input_ids=input_ids, **kwargs)
    return out[0] if isinstance(out, tuple) else out.logits


def build(side: str, args: argparse.Namespace, model_cfg: dict[str, Any]) -> nn.Module:
    if side == "nanogpt":
        return build_nanogpt(args.nanogpt, model_cfg, args.block, args.vocab, args.seed)
    return build_hf(model_cfg, VARIANTS[side], args.vocab, args.seed)


def timed_run(side: str, args: argparse.Namespace, model_cfg: dict, windows: torch.Tensor):
    """Median wall and thread-CPU ms/step of one fresh run, its first `warmup` steps excluded."""
    step, _ = make_step(side, build(side, args, model_cfg), model_cfg)
    wall, cpu = [], []
    precision = VARIANTS[side].fp32_matmul_precision if side in VARIANTS else None
    with fp32_matmul_precision(precision):
        for _ in range(args.warmup + args.steps):
            start, start_cpu = time.perf_counter(), time.thread_time()
            step(windows)
            wall.append(time.perf_counter() - start)
            cpu.append(time.thread_time() - start_cpu)
    return 1000 * statistics.median(wall[args.warmup :]), 1000 * statistics.median(
        cpu[args.warmup :]
    )


@contextlib.contextmanager
def fp32_matmul_precision(precision: str | None):
    """oneDNN's float32 matmul precision set to `precision` for the block (None: unchanged)."""
    if precision is None:
        yield
        return
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = precision
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before


def profile_side(side: str, args: argparse.Namespace, model_cfg: dict, windows: torch.Tensor):
    """Per op name: (calls per step, self CPU µs per step) over `--profile` steps, and per
    Python function: calls per step (cProfile), over as many more steps."""
    step, _ = make_step(side, build(side, args, model_cfg), model_cfg)
    for _ in range(max(args.warmup, 2)):
        step(windows)
    n = args.profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step(windows)
    ops = {
        e.key: (e.count / n, e.self_cpu_time_total / n)
        for e in prof.key_averages()
        if not e.key.startswith("ProfilerStep")
    }
    python = cProfile.Profile()
    python.enable()
    for _ in range(n):
        step(windows)
    python.disable()
    calls = {
        f"{Path(file).parent.name}/{Path(file).name}:{line} {func}": count / n
        for (file, line, func), (_, count, *_) in pstats.Stats(python).stats.items()  # type: ignore[attr-defined]
    }
    return ops, calls


def print_profiles(profiles: dict[str, tuple[dict, dict]], top: int) -> None:
    for side, (ops, calls) in profiles.items():
        aten = sum(c for k, (c, _) in ops.items() if k.startswith("aten::"))
        events = sum(c for c, _ in ops.values())
        total = sum(t for _, t in ops.values()) or 1.0
        print(
            f"\n== {side}: {aten:.0f} aten op calls (nested too), {events:.0f} profiler events, "
            f"{sum(calls.values()):.0f} Python calls per step =="
        )
        print(f"{'op':44s} {'calls/step':>10s} {'self µs/step':>12s} {'share':>6s}")
        for key, (c, t) in sorted(ops.items(), key=lambda kv: -kv[1][1])[:top]:
            print(f"{key[:44]:44s} {c:10.1f} {t:12.0f} {100 * t / total:5.1f}%")
    if "nanogpt" not in profiles:
        return
    base_ops, base_calls = profiles["nanogpt"]
    for side, (ops, calls) in profiles.items():
        if side == "nanogpt":
            continue
        print(f"\n== {side} vs nanogpt: ops whose calls per step differ ==")
        print(f"{'op':44s} {'nanogpt':>8s} {side[:10]:>10s} {'Δ self µs/step':>15s}")
        for key in sorted(set(base_ops) | set(ops)):
            c0, t0 = base_ops.get(key, (0.0, 0.0))
            c1, t1 = ops.get(key, (0.0, 0.0))
            if abs(c1 - c0) > 1e-9:
                print(f"{key[:44]:44s} {c0:8.1f} {c1:10.1f} {t1 - t0:15.0f}")
        print(f"\n== {side}: Python functions with the most calls per step more than nanogpt ==")
        extra = {k: c - base_calls.get(k, 0.0) for k, c in calls.items()}
        for key, c in sorted(extra.items(), key=lambda kv: -kv[1])[:top]:
            if c > 0:
                print(f"{key[:90]:90s} {c:6.0f}")


def check_variants(sides: list[str], args: argparse.Namespace, model_cfg: dict, windows) -> None:
    """Each HF variant against `hf`, from the same weights: logits, loss, grads, 3 steps."""
    reference = build_hf(model_cfg, VARIANTS["hf"], args.vocab, args.seed)
    state = {k: v.clone() for k, v in reference.state_dict().items()}

    def run(side: str) -> dict[str, Any]:
        model = build_hf(model_cfg, VARIANTS[side], args.vocab, args.seed)
        model.load_state_dict(state)
        kwargs = dict(VARIANTS[side].call_kwargs)
        logits = hf_logits(model, windows[:, :-1], kwargs).detach()
        loss = loss_function(side, model)(windows)
        loss.backward()
        loss = loss.detach()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        step, _ = make_step(side, model, model_cfg)
        for _ in range(3):
            step(windows)
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        return {"logits": logits, "loss": loss, "grads": grads, "weights after 3 steps": weights}

    ref = run("hf")
    print("\n== check: each variant vs hf (max |diff|; 'equal' = bitwise) ==")
    for side in [s for s in sides if s not in ("nanogpt", "hf")]:
        with fp32_matmul_precision(VARIANTS[side].fp32_matmul_precision):
            out = run(side)
        parts = [f"{key} {compare(ref[key], out[key])}" for key in ref]
        note = " (loss over one target fewer per row)" if VARIANTS[side].loss == "labels" else ""
        print(f"{side:14s} " + "; ".join(parts) + note)


def compare(a: torch.Tensor | dict, b: torch.Tensor | dict) -> str:
    """'equal' when bitwise equal, else the largest absolute difference."""
    pairs = [(a[n], b[n]) for n in a] if isinstance(a, dict) else [(a, b)]
    if all(torch.equal(x, y) for x, y in pairs):
        return "equal"
    return f"max {max((x - y).abs().max().item() for x, y in pairs):.2e}"


def gemm_layouts(model_cfg: dict, args: argparse.Namespace) -> None:
    """HF's Conv1D (weight in x out, `addmm(b, x, W)`) against nn.Linear (out x in, as nanoGPT)
    on the block's four projections, forward + backward, interleaved; min over rounds."""
    width = model_cfg["config"]["n_embd"]
    rows = args.batch * args.block
    shapes = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
    torch.manual_seed(args.seed)
    layers = {
        "Conv1D": [Conv1D(n_out, n_in) for n_in, n_out in shapes],
        "Linear": [nn.Linear(n_in, n_out) for n_in, n_out in shapes],
    }
    inputs = [torch.randn(rows, n_in, requires_grad=True) for n_in, _ in shapes]
    best = dict.fromkeys(layers, float("inf"))
    for _ in range(args.gemm):
        for name, modules in layers.items():
            start = time.perf_counter()
            for _ in range(20):
                for module, x in zip(modules, inputs, strict=True):
                    module(x).sum().backward()
            best[name] = min(best[name], (time.perf_counter() - start) / 20)
    # forward one product, backward two (input and weight gradients), 2 FLOPs per multiply-add
    flops = 6 * rows * sum(n_in * n_out for n_in, n_out in shapes)
    square = torch.randn(2048, 2048)
    ceiling = min(timed(lambda: torch.mm(square, square)) for _ in range(args.gemm))
    print(f"\n== the 4 projections of a block, fwd + bwd, {rows} rows: min of {args.gemm} ==")
    for name, seconds in best.items():
        rate = flops / seconds / 1e9
        print(
            f"{name:8s} {1e6 * seconds:9.0f} µs  x{seconds / best['Linear']:5.3f} of Linear  "
            f"{rate:6.1f} GFLOP/s"
        )
    print(f"2048^3 mm {2 * 2048**3 / ceiling / 1e9:6.1f} GFLOP/s (a large product: the ceiling)")


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nanogpt", type=Path, default=Path("/tmp/nanogpt"))
    parser.add_argument("--variants", default="hf,hf_no_cache,hf_best", help=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=60, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from each run")
    parser.add_argument("--repeats", type=int, default=5, help="runs per side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--profile", type=int, default=0, help="profile N steps of each side")
    parser.add_argument("--top", type=int, default=25, help="ops listed per profiled side")
    parser.add_argument("--gemm", type=int, default=0, help="Conv1D vs Linear: N rounds")
    parser.add_argument("--check", action="store_true", help="compare variants' outputs with hf")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument(
        "--vocab", type=int, default=65, help="characters (HF: one more, lmtrain's <|endoftext|>)"
    )
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the composed config")
    args = parser.parse_args()
    problems = [f"--steps {args.steps}: pass 1 or more"] if args.steps < 1 else []
    for name in ("warmup", "repeats"):
        if getattr(args, name) < 0:
            problems.append(f"--{name} {getattr(args, name)}: pass 0 or more")
    for name in ("threads", "batch", "block", "vocab"):
        if getattr(args, name) < 1:
            problems.append(f"--{name} {getattr(args, name)}: pass 1 or more")
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        problems.append(f"unknown variants {unknown}: use some of {','.join(VARIANTS)}")
    if not (args.nanogpt / "model.py").is_file():
        problems.append(f"--nanogpt {args.nanogpt} has no model.py: pass nanoGPT's checkout")
    if problems:
        parser.error("; ".join(problems))
    torch.set_num_threads(args.threads)
    model_cfg = model_config([f"data.block_size={args.block}", *args.overrides])
    sides = ["nanogpt", *args.variants.split(",")]
    torch.manual_seed(args.seed)
    windows = torch.randint(args.vocab, (args.batch, args.block + 1))
    print(f"torch {torch.__version__}, {args.threads} thread(s); sides: {', '.join(sides)}")
    print(f"HF config: {model_cfg['config']}, attn {model_cfg['attn_implementation']}")

    if args.check:
        check_variants(sides, args, model_cfg, windows)
    if args.gemm:
        gemm_layouts(model_cfg, args)
    if args.profile:
        print_profiles({s: profile_side(s, args, model_cfg, windows) for s in sides}, args.top)

    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in sides}
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            runs[side].append(timed_run(side, args, model_cfg, windows))
    if not args.repeats:
        return
    print(f"\n== ms/step, median of {args.repeats} runs x {args.steps} steps ==")
    print("(cpu: this thread's CPU time, less sensitive to other load; with --threads 1 only)")
    base = [statistics.median(r[i] for r in runs["nanogpt"]) for i in (0, 1)]
    for side in sides:
        wall, cpu = (statistics.median(r[i] for r in runs[side]) for i in (0, 1))
        each = " ".join(f"{w:.1f}" for w, _ in runs[side])
        print(
            f"{side:14s} wall {wall:7.2f} ms x{wall / base[0]:5.3f}  "
            f"cpu {cpu:7.2f} ms x{cpu / base[1]:5.3f}  (of nanogpt)  wall runs: {each}"
        )


if __name__ == "__main__":
    main()
