#!/usr/bin/env python
"""Data preparation throughput and memory: `TextDataModule.prepare_data()` vs the bare tokenizer.

For each corpus size it builds (once, under data/bench/) a corpus of that many MB from the
standard library's `.py` files, repeated with variation (each repetition rotates the letters by
one more place, so no text repeats and the tokenizer's word cache cannot shortcut it). A byte-level
BPE is trained once on a sample of the largest corpus. Then, side by side in one run and
alternating (bare, prepare, bare, prepare, ...) so that a noisy machine's drift hits both:

- bare: `Tokenizer.encode_batch` on the same texts, already in memory, on every core (the
  tokenizer's own thread pool), in batches of about 1 MB; `encode_batch_fast` likewise;
- prepare: a fresh process runs `TextDataModule(...).prepare_data()` with that tokenizer (kind
  pretrained), reading the files, tokenizing on `--workers` processes and writing the token files;
  the clock covers `prepare_data()` only, not the interpreter start or imports;
- (on `--hf-map-sizes-mb`) the Hugging Face run_clm pipeline on the same files: `load_dataset`
  (text, one row per file), `.map(tokenize, batched, num_proc)`, `.map(group_texts, ...)`.

Peak memory of each process tree is sampled every 50 ms from /proc: PSS (shared pages split
between the processes that share them, i.e. what the tree really uses) and the sum of RSS (which
counts pages shared by forked workers once per process). The best of `--repeats` runs is kept
for each side. Results are merged into logs/bench/latest.json.

    python scripts/bench_data.py                       # 10, 50 and 100 MB
    python scripts/bench_data.py --sizes-mb 10 --repeats 1 --hf-map-sizes-mb
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data_child import child_hf_map, child_prepare
from bench_data_corpus import (
    MB,
    bare_mb_per_s,
    build_corpus,
    corpus_dir_problem,
    corpus_texts,
    train_tokenizer,
)
from bench_memory import TreeMemory

ROOT = Path(__file__).resolve().parents[1]


def run_child(mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run this script as `--child MODE` in a fresh process, tracking its memory from outside."""
    command = [sys.executable, __file__, "--child", mode, json.dumps(settings)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    memory = TreeMemory(process.pid)
    memory.start()
    out, _ = process.communicate()
    memory.done.set()
    memory.join()
    if process.returncode != 0:
        raise SystemExit(f"{mode} child failed with exit code {process.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_pss_mb"] = memory.peak_pss_kb / 1024
    result["peak_rss_sum_mb"] = memory.peak_rss_kb / 1024
    return result


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The whole docstring as written, and each option's default."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add = parser.add_argument
    add("--sizes-mb", type=int, nargs="+", default=[10, 50, 100], help="corpus sizes to measure")
    add("--workers", type=int, default=None, help="prepare workers; None = every core")
    add("--chunk-mb", type=float, default=1.0, help="data.prepare_chunk_mb")
    add("--repeats", type=int, default=2, help="runs per side, best kept")
    add("--vocab-size", type=int, default=8192, help="BPE vocabulary")
    add("--sample-mb", type=float, default=10.0, help="BPE training sample")
    add(
        "--hf-map-sizes-mb",
        type=int,
        nargs="*",
        help="datasets.map on these sizes; None or the flag alone = the largest only",
    )
    add("--corpus-dir", type=Path, default=ROOT / "data" / "bench", help="corpora, tokenizer")
    add("--out", type=Path, default=ROOT / "logs" / "bench" / "latest.json", help="merged into")
    add("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    problems = [f"--repeats {args.repeats}: pass 1 or more"] if args.repeats < 1 else []
    if any(size < 1 for size in args.sizes_mb):
        sizes = " ".join(map(str, args.sizes_mb))
        problems.append(f"--sizes-mb {sizes}: pass sizes of 1 or more (MB)")
    if args.workers is not None and args.workers < 1:
        problems.append(f"--workers {args.workers}: pass 1 or more, or leave it out (every core)")
    missing = sorted(set(args.hf_map_sizes_mb or []) - set(args.sizes_mb))
    if missing:
        problems.append(
            f"--hf-map-sizes-mb {' '.join(map(str, missing))}: not in --sizes-mb: pass some of "
            f"{' '.join(map(str, args.sizes_mb))}, or the flag alone for the largest"
        )
    if not args.child:  # a child gets what the parent checked
        problems += build_problems(args)
    if problems:
        parser.error("; ".join(problems))
    return args


def build_problems(args: argparse.Namespace) -> list[str]:
    """What would fail only after the corpora are built and the BPE trained (--chunk-mb in the
    last step), or would replace files of the user's in --corpus-dir."""
    from lmtrain.data.tokenizers import MAX_BPE_VOCAB_SIZE, MIN_BPE_VOCAB_SIZE

    problems = []
    if not MIN_BPE_VOCAB_SIZE <= args.vocab_size <= MAX_BPE_VOCAB_SIZE:
        problems.append(
            f"--vocab-size {args.vocab_size}: pass {MIN_BPE_VOCAB_SIZE} to "
            f"{MAX_BPE_VOCAB_SIZE} (a byte-level BPE: 256 bytes and an end token), e.g. 8192"
        )
    for option, mb in (("--sample-mb", args.sample_mb), ("--chunk-mb", args.chunk_mb)):
        if not (math.isfinite(mb) and mb * MB >= 1):
            problems.append(f"{option} {mb}: pass a positive size in MB (a byte at least), e.g. 1")
    problem = corpus_dir_problem(args.corpus_dir, args.sizes_mb, args.vocab_size)
    return [*problems, problem] if problem else problems


def hf_map_sizes(args: argparse.Namespace) -> list[int]:
    """The sizes `datasets.map` runs on: those given, or (none, or the flag alone) the largest."""
    return args.hf_map_sizes_mb or [max(args.sizes_mb)]


def measure(corpus: Path, tokenizer_dir: Path, args: argparse.Namespace, tmp: str) -> dict:
    """Bare tokenizer and prepare_data() on one corpus, alternating, best of `args.repeats`."""
    texts = corpus_texts(corpus)
    text_mb = sum(len(t.encode("utf-8")) for t in texts) / MB
    runs: dict[str, list[Any]] = {"bare": [], "bare_fast": [], "prepare": []}
    for repeat in range(args.repeats):
        runs["bare"].append(bare_mb_per_s(texts, tokenizer_dir, "encode_batch"))
        runs["bare_fast"].append(bare_mb_per_s(texts, tokenizer_dir, "encode_batch_fast"))
        settings = {"corpus": str(corpus), "tokenizer": str(tokenizer_dir)}
        settings |= {"cache_dir": f"{tmp}/{corpus.name}_{repeat}", "workers": args.workers}
        runs["prepare"].append(run_child("prepare", settings | {"chunk_mb": args.chunk_mb}))
        last = runs["prepare"][-1]
        print(
            f"{corpus.name} run {repeat}: bare {runs['bare'][-1]:.2f} MB/s, fast "
            f"{runs['bare_fast'][-1]:.2f} MB/s, prepare {text_mb / last['seconds']:.2f} MB/s, "
            f"{last['peak_pss_mb']:.0f} MB PSS",
            file=sys.stderr,
        )
    best = min(runs["prepare"], key=lambda r: r["seconds"])
    assert abs(best["text_bytes"] / MB - text_mb) < 1e-6, "prepare and bare saw different text"
    prepare_mb_s = text_mb / best["seconds"]
    return {
        "text_mb": text_mb,
        "prepare_mb_per_s": prepare_mb_s,
        "raw_tokenizer_mb_per_s": max(runs["bare"]),
        "raw_tokenizer_fast_mb_per_s": max(runs["bare_fast"]),
        "prepare_ratio": prepare_mb_s / max(runs["bare"]),
        "prepare_ratio_vs_fast": prepare_mb_s / max(runs["bare_fast"]),
        "prepare_peak_pss_mb": max(r["peak_pss_mb"] for r in runs["prepare"]),
        "prepare_peak_rss_sum_mb": max(r["peak_rss_sum_mb"] for r in runs["prepare"]),
        "prepare_rss_before_mb": best["rss_before_prepare_mb"],
        "prepare_workers": best["workers"],
        "tokens": best["tokens"],
        "runs": runs,
    }


def measure_hf_map(corpus: Path, tokenizer_dir: Path, result: dict, workers: int, tmp: str) -> None:
    """The run_clm pipeline on the same corpus, added to `result` with its ratios."""
    settings = {"corpus": str(corpus), "tokenizer": str(tokenizer_dir)}
    hf = run_child(
        "hf_map", settings | {"cache_dir": f"{tmp}/hf_{corpus.name}", "workers": workers}
    )
    result["hf_map_mb_per_s"] = result["text_mb"] / hf["seconds"]
    result["hf_map_peak_pss_mb"] = hf["peak_pss_mb"]
    result["hf_map_ratio"] = result["hf_map_mb_per_s"] / result["raw_tokenizer_mb_per_s"]
    result["prepare_vs_hf_map"] = result["prepare_mb_per_s"] / result["hf_map_mb_per_s"]
    print(f"{corpus.name} datasets.map: {result['hf_map_mb_per_s']:.2f} MB/s", file=sys.stderr)


def main() -> None:
    args = parse_args()
    if args.child:
        mode, settings = args.child[0], json.loads(args.child[1])
        result = child_prepare(settings) if mode == "prepare" else child_hf_map(settings)
        print(json.dumps(result), flush=True)
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # the bare tokenizer gets every core
    from bench_out import check_out, write_report

    from lmtrain.data.encode import default_workers

    check_out(args.out)
    args.workers = args.workers or default_workers()
    largest = max(args.sizes_mb)
    hf_sizes = hf_map_sizes(args)
    load_before = os.getloadavg()
    corpora = {
        size: build_corpus(args.corpus_dir / f"stdlib_{size}mb", size) for size in args.sizes_mb
    }
    tokenizer_dir = args.corpus_dir / f"bpe_{args.vocab_size}"
    bpe_s = train_tokenizer(corpora[largest], args.vocab_size, args.sample_mb, tokenizer_dir)
    print(f"BPE trained on {args.sample_mb} MB in {bpe_s:.1f}s", file=sys.stderr)
    sizes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, corpus in corpora.items():
            sizes[str(size)] = measure(corpus, tokenizer_dir, args, tmp)
            if size in hf_sizes:
                measure_hf_map(corpus, tokenizer_dir, sizes[str(size)], args.workers, tmp)

    headline = sizes[str(largest)]
    keys = ["prepare_mb_per_s", "raw_tokenizer_mb_per_s", "prepare_ratio", "prepare_peak_pss_mb"]
    keys += ["raw_tokenizer_fast_mb_per_s", "prepare_ratio_vs_fast"]
    keys += [k for k in ("hf_map_mb_per_s", "hf_map_ratio", "prepare_vs_hf_map") if k in headline]
    report = json.loads(args.out.read_text()) if args.out.is_file() else {}
    # Not from an earlier run when not measured in this one; prepare_peak_rss_mb: the PSS peak
    # under its old, wrong name.
    for key in ("hf_map_mb_per_s", "hf_map_ratio", "prepare_vs_hf_map", "prepare_peak_rss_mb"):
        report.pop(key, None)
    report.update({key: headline[key] for key in keys})
    report["data_prepare"] = {
        "sizes_mb": sizes,
        "headline_size_mb": largest,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cores": os.cpu_count(),
        "bpe_train_s": bpe_s,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_report(args.out, report)
    print(
        f"\n{'MB':>4} {'prepare':>8} {'bare':>6} {'ratio':>6} {'vs fast':>7} {'PSS MB':>6} hf map"
    )
    for size, r in sizes.items():
        hf = f"{r['hf_map_mb_per_s']:6.2f}" if "hf_map_mb_per_s" in r else "     -"
        print(
            f"{size:>4} {r['prepare_mb_per_s']:8.2f} {r['raw_tokenizer_mb_per_s']:6.2f} "
            f"{r['prepare_ratio']:6.2f} {r['prepare_ratio_vs_fast']:7.2f} "
            f"{r['prepare_peak_pss_mb']:6.0f} {hf}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
