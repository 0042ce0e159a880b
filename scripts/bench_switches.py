#!/usr/bin/env python
"""What each speed switch gives on this machine: the same Lightning run with and without it.

For each switch, runs alternate (baseline, switched, switched, baseline, ...) so that a noisy
machine's drift hits both; each run's first `--warmup` steps are excluded (they hold
torch.compile's compilation), and the ratio of the medians (switched / baseline tokens/s) is
reported. Everything else is `scripts/bench.py`'s Lightning side: the default callbacks and the
W&B logger, validation off (and with it the text samples). Results are merged into
logs/bench/latest.json under `switches`.

    python scripts/bench_switches.py                           # every switch, shakespeare_char
    python scripts/bench_switches.py --switches foreach_adamw,tanh_gelu --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_args import refuse_bad_arguments
from bench_config import ROOT, SIZES, compose_config, prepare_corpus, read_corpus_from
from bench_lightning import run_lightning
from bench_machine import machine
from bench_out import check_out, write_report

from lmtrain.errors import LMTrainError

# name -> overrides that turn the switch on (the baseline is the size's config as it is).
SWITCHES: dict[str, list[str]] = {
    # AdamW one tensor at a time, PyTorch's choice on CPUs, instead of the default fused kernel:
    # a speedup below 1 is what the fused one saves.
    "foreach_adamw": ["model.optimizer.fused=null"],
    # HF's GPT-2 default, the tanh approximation of GELU, instead of gpt2_tiny's exact GELU (one
    # PyTorch kernel): a speedup below 1 is what the exact one saves.
    "tanh_gelu": ["model.config.activation_function=gelu_new"],
    "eager_attention": ["model.attn_implementation=eager"],
    "bf16_mixed": ["trainer.precision=bf16-mixed"],
    "num_workers_1": ["data.num_workers=1"],
    "compile": ["model.compile=true"],
    # Muon (BatchedMuon) for the blocks' matrices, AdamW for the rest: what a Muon step costs
    # against AdamW's.
    "muon": ["model/optimizer=muon"],
}
# Overrides a switch needs on one size only: experiment=shakespeare_char sets AdamW's keys at
# model.optimizer's top level, which Muon's parts do not take.
SIZE_EXTRAS: dict[tuple[str, str], list[str]] = {
    ("muon", "shakespeare_char"): [
        f"~model.optimizer.{key}" for key in ("lr", "betas", "weight_decay")
    ],
}


def switch_overrides(name: str, size: str) -> list[str]:
    """The overrides that turn switch `name` on for `size`."""
    return [*SWITCHES[name], *SIZE_EXTRAS.get((name, size), [])]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="shakespeare_char", choices=list(SIZES))
    parser.add_argument("--switches", default=",".join(SWITCHES), help=", ".join(SWITCHES))
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=30, help="steps excluded from each run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side per switch")
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "latest.json")
    parser.add_argument("--data", type=Path, default=None, help="Tiny Shakespeare's input.txt")
    args = parser.parse_args()
    refuse_bad_arguments(parser, args, "--switches", args.switches, list(SWITCHES))
    check_out(args.out)
    read_corpus_from(args.data)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base_cfg = compose_config(args.size, args.steps, Path(tmp) / "base", [])
        prepare_corpus(base_cfg, args.data if args.size == "shakespeare_char" else None)
        for name in args.switches.split(","):
            runs: dict[str, list[float]] = {"baseline": [], "switched": []}
            for repeat in range(args.repeats):
                order = ("baseline", "switched") if repeat % 2 == 0 else ("switched", "baseline")
                for side in order:
                    extra = switch_overrides(name, args.size) if side == "switched" else []
                    cfg = compose_config(args.size, args.steps, Path(tmp) / name / side, extra)
                    try:
                        runs[side].append(run_lightning(cfg, args.warmup))
                    except LMTrainError as err:  # the temporary folder is removed on the way
                        sys.exit(f"error: {name} {side} run: {err}")
                    print(f"{name:>16} {side:>9}: {runs[side][-1]:,.0f} tok/s", file=sys.stderr)
            base, switched = (statistics.median(runs[s]) for s in ("baseline", "switched"))
            results[name] = {
                "overrides": switch_overrides(name, args.size),
                "baseline_tokens_per_s": base,
                "switched_tokens_per_s": switched,
                "speedup": switched / base,
                "runs": runs,
                # Per switch: switches measured by separate commands keep their own settings.
                "settings": {
                    "size": args.size,
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "repeats": args.repeats,
                    "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "machine": machine(),
                },
            }

    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    report["switches"] = {**report.get("switches", {}), **results}
    report.pop("machine", None)  # older files: one for all; now in each switch's settings
    report.pop("switches_settings", None)  # older files: now each switch's settings
    write_report(args.out, report)
    print(f"\n{'switch':>16} {'baseline tok/s':>15} {'switched tok/s':>15} {'speedup':>8}")
    for name, r in results.items():
        print(
            f"{name:>16} {r['baseline_tokens_per_s']:>15,.0f} "
            f"{r['switched_tokens_per_s']:>15,.0f} {r['speedup']:>8.3f}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
