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
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step_diagnostics import check_variants, gemm_layouts, print_profiles, profile_side
from bench_step_sides import VARIANTS, build, fp32_matmul_precision, make_step, model_config


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
