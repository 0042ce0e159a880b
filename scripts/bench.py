#!/usr/bin/env python
"""Lightning tax, measured: our CausalLMModule under Lightning's Trainer vs a raw PyTorch loop.

Both train the same HF model (same config, same seed, same initial weights) on the same batches
from the same TextDataModule, with the same AdamW groups, schedule and gradient clipping, on the
same number of torch threads (`--threads`, pinned before every run; default: torch's own choice).
The Lightning side runs the configured callbacks and logger (checkpointing, LR monitor, progress
bar, throughput monitor, W&B offline), as `make train` does; validation is off on both sides since
the raw loop has none. Each run's first `--warmup` steps are excluded.

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
import contextlib
import itertools
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict

from lmtrain.callbacks.resume import ExactResume
from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from lmtrain.utils.instantiate import (
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_trainer,
)
from lmtrain.utils.task import finish_wandb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_out import check_out, write_report

ROOT = Path(__file__).resolve().parents[1]
# trainer.precision values the raw loop reproduces (bf16-mixed: autocast, as Lightning's).
RAW_PRECISIONS = ("32", "32-true", "bf16-mixed")
SIZES: dict[str, list[str]] = {
    # nanoGPT's baby model: 4 x 4 x 128, char vocabulary, block 64, batch 12 (0.8M parameters).
    # Tiny Shakespeare is downloaded once under data/, or read from --data.
    "shakespeare_char": ["experiment=shakespeare_char"],
    # A ~10M-parameter GPT-2 (6 x 6 x 384) on the stdlib corpus, BPE 2048, block 256, batch 8.
    "gpt2_10m": [
        "data=python_stdlib",
        "model.config.n_layer=6",
        "model.config.n_head=6",
        "model.config.n_embd=384",
        "data.block_size=256",
        "data.batch_size=8",
    ],
}


class StepClock(L.Callback):
    """perf_counter after every optimizer step: the same clock the raw loop reads."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: Any) -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the step's kernels, not only their launch
        self.times.append(time.perf_counter())


def compose_train(overrides: list[str], given_as: str) -> DictConfig:
    """The train config with `overrides` (and Hydra's own); a bad one ends the script in one
    `error: <given_as>: ...` line."""
    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as err:
        sys.exit(f"error: {given_as}: {' '.join(str(err).split())}: fix or drop it")


def compose_config(size: str, steps: int, out_dir: Path, extra: list[str]) -> DictConfig:
    """The size's config with `extra` (the command line's overrides); a bad override is one
    `error:` line."""
    GlobalHydra.instance().clear()
    overrides = [
        *SIZES[size],
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "tags=[bench]",
        *extra,
    ]
    cfg = compose_train(overrides, f"overrides {shlex.join(extra)}")
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def raw_loop_problem(cfg: DictConfig) -> str | None:
    """What the raw loop would not do as the Lightning side does: it runs one process, on the
    device the trainer picks, in fp32 or bf16 autocast, one batch per optimizer step."""
    trainer = cfg.trainer
    precision = str(trainer.get("precision", "32-true"))
    if precision not in RAW_PRECISIONS:
        return (
            f"trainer.precision={precision}: the raw loop mirrors only "
            f"{', '.join(RAW_PRECISIONS)}: pass one of those"
        )
    if trainer.get("max_epochs") not in (None, -1) or trainer.get("max_time") is not None:
        key = "max_epochs" if trainer.get("max_epochs") not in (None, -1) else "max_time"
        return (
            f"trainer.{key}={trainer[key]}: Lightning would stop there, the raw loop runs "
            "--steps steps over as many epochs as they take: leave it out"
        )
    if trainer.get("accumulate_grad_batches", 1) != 1:
        return (
            f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches}: the raw loop "
            "steps on every batch: leave it at 1"
        )
    if str(trainer.get("devices", "auto")) not in ("auto", "1", "[0]"):
        return f"trainer.devices={trainer.devices}: the benchmark is one process: pass 1"
    if str(trainer.get("num_nodes", 1)) != "1":
        return f"trainer.num_nodes={trainer.num_nodes}: the benchmark is one process: pass 1"
    if cfg.get("global_batch_size") is not None:  # lmtrain.train turns it into accumulation
        return (
            f"global_batch_size={cfg.global_batch_size}: the benchmark steps on every batch: "
            "set data.batch_size instead"
        )
    return None


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Only errors from the loggers `names` in the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def raw_device(cfg: DictConfig) -> torch.device:
    """The device Lightning's `accelerator` picks for one process: a GPU when asked for or
    (`auto`) present, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def read_corpus_from(data: Path | None) -> None:
    """shakespeare_char reads Tiny Shakespeare from `--data` (None: downloaded once)."""
    if data is not None:
        if not data.is_file():
            sys.exit(f"error: --data {data} is not a file: pass Tiny Shakespeare's input.txt")
        SIZES["shakespeare_char"].append(f"data.source.path={data.resolve()}")


def prepare_corpus(cfg: DictConfig, data: Path | None) -> None:
    """Tokenize outside the timing (or find the token cache) and check that both splits hold a
    window: a bad corpus ends here, before any run, with one line (`data`: the `--data` read)."""
    datamodule = hydra.utils.instantiate(cfg.data)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except LMTrainError as err:
        sys.exit(f"error: --data {data}: {err}" if data is not None else f"error: {err}")


def timing_problems(steps: int, warmup: int, repeats: int) -> list[str]:
    """What is wrong with --steps, --warmup and --repeats: each run's clock starts at the end of
    step `warmup` (so at least 1) and needs a step after it."""
    problems = []
    if warmup < 1:
        problems.append(f"--warmup {warmup}: pass 1 or more (the clock starts after that step)")
    if steps <= warmup:
        problems.append(
            f"--steps {steps} leaves no timed step after --warmup {warmup}: "
            f"pass --steps {max(warmup, 1) + 1} or more"
        )
    if repeats < 1:
        problems.append(f"--repeats {repeats}: pass 1 or more")
    return problems


def refuse_bad_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, flag: str, names: str, known: list
) -> None:
    """Before any work: one parser error naming every bad --steps, --warmup or --repeats and
    every unknown name of `flag` (`names`, comma-separated); then --out and --data."""
    problems = timing_problems(args.steps, args.warmup, args.repeats)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        problems.append(f"--threads {threads}: pass 1 or more, or leave it out (torch's own)")
    unknown = [name for name in names.split(",") if name not in known]
    if unknown:
        problems.append(f"{flag}: unknown {unknown}: pass some of {','.join(known)}")
    if problems:
        parser.error("; ".join(problems))
    check_out(args.out)
    read_corpus_from(args.data)


def tokens_per_second(times: list[float], warmup: int, tokens_per_step: int) -> float:
    """Tokens/s from the end of step `warmup` to the end of the last (needs steps > warmup)."""
    timed = times[warmup - 1 :]
    return (len(timed) - 1) * tokens_per_step / (timed[-1] - timed[0])


def pin_threads(threads: int) -> None:
    """The same torch threads for every run; the env vars for any process a run starts."""
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)


def spread(values: list[float]) -> dict[str, float]:
    """Min, quartiles and max of `values`."""
    quartiles = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else []
    q1, q3 = (quartiles[0], quartiles[2]) if quartiles else (values[0], values[0])
    return {"min": min(values), "q1": q1, "q3": q3, "max": max(values)}


def overhead(runs: dict[str, list[float]], tokens_per_step: int) -> dict[str, Any]:
    """The paired ratios (run i of each side was adjacent) and the absolute ms per step."""
    ratios = [lit / raw for lit, raw in zip(runs["lightning"], runs["raw"], strict=True)]
    ms = {side: [1000 * tokens_per_step / tps for tps in runs[side]] for side in runs}
    lightning_ms, raw_ms = (statistics.median(ms[s]) for s in ("lightning", "raw"))
    return {
        "lightning_tokens_per_s": statistics.median(runs["lightning"]),
        "raw_tokens_per_s": statistics.median(runs["raw"]),
        "overhead_ratio": statistics.median(ratios),
        "overhead_ratio_spread": spread(ratios),
        "paired_ratios": ratios,
        "lightning_ms_per_step": lightning_ms,
        "raw_ms_per_step": raw_ms,
        "overhead_ms_per_step": lightning_ms - raw_ms,
    }


def run_lightning(cfg: DictConfig, warmup: int) -> float:
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    clock = StepClock()
    # What lmtrain.train runs: the configured callbacks plus ExactResume, which it always adds.
    callbacks = [*instantiate_callbacks(cfg.callbacks), ExactResume(), clock]
    trainer = instantiate_trainer(
        cfg.trainer, callbacks=callbacks, logger=instantiate_loggers(cfg.logger)
    )
    trainer.fit(module, datamodule=datamodule)
    finish_wandb(0)
    return tokens_per_second(clock.times, warmup, cfg.data.batch_size * cfg.data.block_size)


def epochs(loader: Any) -> Iterator[torch.Tensor]:
    """`loader`'s batches epoch after epoch, as Lightning's fit loop reads them: `set_epoch` on
    its sampler, then a new iterator (ResumableWindowSampler's epoch e+1 goes on in the stream
    where epoch e stopped, as under the trainer, instead of drawing epoch e's windows again)."""
    for epoch in itertools.count():
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        yield from loader


def run_raw(cfg: DictConfig, warmup: int) -> float:
    """The loop a researcher would write by hand: forward, loss, backward, clip, step, zero."""
    L.seed_everything(cfg.seed)
    datamodule = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model, tokenizer=datamodule.tokenizer, _convert_="all")
    device = raw_device(cfg)
    model = module.model.to(device).train()
    autocast = torch.autocast(device.type, torch.bfloat16, enabled="bf16" in cfg.trainer.precision)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = module.optimizer_factory(
        [
            {"params": [p for p in params if p.dim() >= 2]},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    )
    scheduler = module.scheduler_factory(optimizer, num_training_steps=cfg.trainer.max_steps)
    datamodule.setup("fit")
    times = []
    batches = epochs(datamodule.train_dataloader())
    for _ in range(cfg.trainer.max_steps):
        windows = next(batches).to(device)
        with autocast:  # the same model call as under Lightning (no KV cache)
            logits = module(windows[:, :-1])
            loss = F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.trainer.gradient_clip_val)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return tokens_per_second(times, warmup, cfg.data.batch_size * cfg.data.block_size)


def machine() -> dict[str, Any]:
    import lightning
    import transformers

    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


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
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for both sides")
    args = parser.parse_args()
    refuse_bad_arguments(parser, args, "--sizes", args.sizes, list(SIZES))
    os.environ.setdefault("WANDB_SILENT", "true")
    threads = args.threads or torch.get_num_threads()
    sizes = args.sizes.split(",")
    for size in sizes:  # every size's overrides, before any work, as lmtrain.train checks them
        cfg = compose_config(size, args.steps, args.out, args.overrides)
        try:
            with quiet("lmtrain.utils.trainer_checks", "lightning.pytorch"):  # the timed runs say
                check_train_config(cfg)  # it; a warm-up is no concern of a speed benchmark
                instantiate_trainer(cfg.trainer, logger=False)  # what Lightning refuses (no GPU)
        except LMTrainError as err:
            sys.exit(f"error: overrides {shlex.join(args.overrides)}: {err}")
        problem = raw_loop_problem(cfg)
        if problem:
            sys.exit(f"error: {problem}")

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
                    runs[side].append(run(cfg, args.warmup))
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
