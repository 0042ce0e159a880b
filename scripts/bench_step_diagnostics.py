"""bench_model_step.py's optional looks before the timed runs: `--check` (each variant's
outputs against `hf`'s), `--profile` (ops and Python calls per step against nanoGPT's) and
`--gemm` (HF's Conv1D layout against nn.Linear's).

The timings say by how much one side's step is slower; these say why, in counts that do not
depend on the machine's load.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_step_sides import (
    VARIANTS,
    build,
    build_hf,
    fp32_matmul_precision,
    hf_logits,
    loss_function,
    make_step,
)
from torch import nn
from transformers.pytorch_utils import Conv1D


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
