#!/usr/bin/env python
"""Lightning tax, measured: our CausalLMModule under Lightning's Trainer vs a raw PyTorch loop.

Both train the same HF model (same config, same seed, same initial weights) on the same batches
from the same TextDataModule, with the same AdamW groups, schedule and gradient clipping, on the
same number of torch threads (`--threads`, pinned before every run; default: torch's own choice).
The Lightning side runs the configured callbacks and logger (checkpointing, LR monitor, progress
bar, throughput monitor, W&B offline), as `make train` does; validation is off on both sides since
the raw loop has none (an override turning it back on is refused), and with it the text samples,
which run after a validation. Each run's first `--warmup` steps are excluded.

Runs come in `--repeats` adjacent pairs (Lightning, raw), (raw, Lightning), ... so that drift of a
noisy machine hits both sides of a pair alike. The reported `overhead_ratio` (Lightning tokens/s
over raw tokens/s, above 1 when Lightning is faster) is the median of the pairs' ratios, with
their spread (min, quartiles, max); `overhead_ms_per_step` is the absolute cost, the median
ms/step of the Lightning runs minus that of the raw runs. Results go to `logs/bench/latest.json`
(merged with what other benchmarks wrote).

    python scripts/bench.py                     # both default sizes
    python scripts/bench.py --sizes shakespeare_char --steps 300 --repeats 9 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_args import refuse_bad_arguments, refuse_bad_overrides
from bench_config import ROOT, SIZES, compose_config, prepare_corpus, read_corpus_from
from bench_lightning import run_lightning
from bench_machine import machine
from bench_out import check_out, write_report
from bench_raw import raw_device, run_raw
from bench_stats import overhead

from lmtrain.errors import LMTrainError


def pin_threads(threads: int) -> None:
    """The same torch threads for every run; the env vars for any process a run starts."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES)
    )
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="steps excluded from each run")
    parser.add_argument("--repeats", type=int, default=6, help="adjacent pairs per size")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads, both sides (default: torch's)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "latest.json")
    parser.add_argument("--data", type=Path, default=None, help="Tiny Shakespeare's input.txt")
    parser.add_argument(
        "--check-args",
        action="store_true",
        help="only check the arguments, then exit (make bench: before any benchmark measures)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    args = parser.parse_args()
    refuse_bad_arguments(parser, args, "--sizes", args.sizes, list(SIZES))
    check_out(args.out)
    read_corpus_from(args.data)
    os.environ.setdefault("WANDB_SILENT", "true")
    threads = args.threads or torch.get_num_threads()
    sizes = args.sizes.split(",")
    refuse_bad_overrides(sizes, args.steps, args.out, args.overrides)  # before any work
    if args.check_args:
        return

    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            cfg = compose_config(size, args.steps, Path(tmp) / size, args.overrides)
            prepare_corpus(cfg, args.data if size == "shakespeare_char" else None)
            runs: dict[str, list[float]] = {"lightning": [], "raw": []}
            for repeat in range(args.repeats):
                order = ("lightning", "raw") if repeat % 2 == 0 else ("raw", "lightning")
                for side in order:
                    run = run_lightning if side == "lightning" else run_raw
                    pin_threads(threads)  # before each run: nothing a run changes carries over
                    try:
                        runs[side].append(run(cfg, args.warmup))
                    except LMTrainError as err:  # the temporary folder is removed on the way
                        sys.exit(f"error: {size} {side} run: {err}")
                    print(
                        f"{size:>16} {side:>9} run {repeat}: {runs[side][-1]:,.0f} tokens/s",
                        file=sys.stderr,
                        flush=True,
                    )
            tokens_per_step = cfg.data.batch_size * cfg.data.block_size
            results[size] = {
                **overhead(runs, tokens_per_step),
                "runs": runs,
                "overrides": [*SIZES[size], *args.overrides],
                "batch_size": cfg.data.batch_size,
                "block_size": cfg.data.block_size,
                "precision": cfg.trainer.precision,
                "device": str(raw_device(cfg)),
                # Per size: sizes measured by separate commands keep their own settings.
                "settings": {
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "repeats": args.repeats,
                    "threads": threads,
                    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": machine(),
                },
            }

    # Merge per size, so that sizes measured in separate invocations end up side by side.
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "steps" in report.get("overhead_settings", {}):  # older files: one run's, for all sizes
        del report["overhead_settings"]
    per_size = {
        "lightning_tokens_per_s": {s: r["lightning_tokens_per_s"] for s, r in results.items()},
        "raw_tokens_per_s": {s: r["raw_tokens_per_s"] for s, r in results.items()},
        "overhead_ratio": {s: r["overhead_ratio"] for s, r in results.items()},
        "overhead_ratio_spread": {s: r["overhead_ratio_spread"] for s, r in results.items()},
        "overhead_ms_per_step": {s: r["overhead_ms_per_step"] for s, r in results.items()},
        "overhead_settings": {s: r["settings"] for s, r in results.items()},
        "overhead": results,
    }
    for key, values in per_size.items():
        report[key] = {**(report.get(key) if isinstance(report.get(key), dict) else {}), **values}
    report.pop("machine", None)  # older files: one for all; now in each size's settings
    report.pop("overhead_measured_at", None)  # older files: now each size's settings
    write_report(args.out, report)
    header = f"{'lightning tok/s':>16} {'raw tok/s':>10} {'ratio':>6} {'[min, max]':>14}"
    print(f"\n{'size':>16} {header} {'ms/step':>8} {'+ms':>6}")
    for size, r in results.items():
        low, high = r["overhead_ratio_spread"]["min"], r["overhead_ratio_spread"]["max"]
        print(
            f"{size:>16} {r['lightning_tokens_per_s']:>16,.0f} {r['raw_tokens_per_s']:>10,.0f} "
            f"{r['overhead_ratio']:>6.3f} [{low:.3f}, {high:.3f}] {r['raw_ms_per_step']:>8.1f} "
            f"{r['overhead_ms_per_step']:>+6.2f}"
        )
    print(f"ratio: median of {args.repeats} adjacent pairs; ms/step: raw loop's; +ms: Lightning's")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
