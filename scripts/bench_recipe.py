#!/usr/bin/env python
"""nanoGPT's baby Shakespeare recipe three ways, timed as whole commands: nanoGPT's train.py,
transformers' `Trainer` (scripts/trainer_recipe.py) and `python -m lmtrain.train`.

Each command runs as a subprocess and is timed from start to exit (wall time: imports, data,
training, evaluation, everything a user waits for), with the same torch threads for all
(`--threads`, in OMP_NUM_THREADS and MKL_NUM_THREADS). Commands alternate (A, B, C, C, B, A, ...)
so that a noisy machine's drift hits them all; the median wall time of `--repeats` runs is
reported per command, with each run's final val loss, and lmtrain's ratio to the fastest of the
others. lmtrain's token cache is built before the clock starts (nanoGPT's train.bin is prepared
beforehand too). Results are merged into logs/bench/latest.json under `recipe.<--recipe>`.

Where the time goes, from each command's own output: `outside_loop_s` is the wall time outside
its training loop (interpreter start, imports, data, model, final evaluation, exit): nanoGPT's
loop is the sum of its per-iteration times (its evaluations included), Trainer's is its
`train_runtime` (the final whole-split `evaluate()` is outside), lmtrain's is metrics.json's
`time/train_s` (the training loop, in-training validations included; the final whole-split
validation is outside). For lmtrain, `to_first_log_s` is the start up to its first log line
(interpreter, imports, Hydra's config composition) and `startup_s` metrics.json's
`time/startup_s` (the start to the end of the first optimizer step), where the run records it.
Val losses differ in kind: nanoGPT's is the mean of 20 random val batches at its last
evaluation, the others' is the whole val split.

`--recipe baseline` (default) runs experiment=shakespeare_char beside nanoGPT (if `--nanogpt`
names a checkout with data/shakespeare_char/{train,val}.bin) and the Trainer script;
`--recipe fast` runs experiment=shakespeare_char_fast beside nanoGPT only: its target is at most
0.33x nanoGPT's wall time. Every command runs its recipe's own length unless `--steps` is given.

    python scripts/bench_recipe.py --nanogpt /path/to/nanoGPT
    python scripts/bench_recipe.py --nanogpt /path/to/nanoGPT --recipe fast --repeats 3
    python scripts/bench_recipe.py --steps 20 --repeats 1       # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import pydoc
import shlex
import sys
import tempfile
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_commands import run_side_by_side, summary
from bench_config import ROOT, compose_train
from bench_out import check_out, write_report
from bench_recipe_commands import recipe_commands
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from lmtrain.callbacks.samples import TextSamples
from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.errors import LMTrainError
from lmtrain.models.generation import prompt_problem, quote
from lmtrain.models.hf import context_length
from lmtrain.utils.config_checks import check_train_config

EXPERIMENTS = {"baseline": "shakespeare_char", "fast": "shakespeare_char_fast"}


def prepare_lmtrain_data(experiment: str, data: Path, extra: list[str]) -> None:
    """Compose lmtrain's whole command as it will run, so that a bad `--lmtrain-args` ends here
    and not after the other commands' runs; then build (or find) the run's token cache, so that
    no timed run tokenizes the corpus, and check that both splits hold a window (an
    LMTrainError otherwise)."""
    overrides = [f"experiment={experiment}", f"data.source.path={data}", *extra]
    cfg = compose_train(overrides, f"--lmtrain-args {shlex.join(extra)}")
    HydraConfig().set_config(cfg)
    try:
        check_train_config(cfg)
    except LMTrainError as err:
        sys.exit(f"error: --lmtrain-args {shlex.join(extra)}: {err}")
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    refuse_unsampleable_prompts(cfg, datamodule.tokenizer)


def is_text_samples(target: object) -> bool:
    """Whether a callbacks entry's `_target_` is TextSamples (or a subclass)."""
    try:
        located = pydoc.locate(str(target))
    except pydoc.ErrorDuringImport:
        return False
    return isinstance(located, type) and issubclass(located, TextSamples)


def refuse_unsampleable_prompts(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """lmtrain's run validates, so its text samples' prompts are checked (TextSamples.setup)
    inside its first timed run: a `--data` without their characters ('ROMEO:' in lower-case
    text) failed only after the other commands' whole runs. The same check, before any."""
    entries = (cfg.get("callbacks") or {}).values()
    callbacks = [  # samples.txt's folder is the run's, not known before it runs: any will do
        hydra.utils.instantiate(entry, dirpath=".")
        for entry in entries
        if isinstance(entry, DictConfig) and is_text_samples(entry.get("_target_"))
    ]
    if not callbacks:
        return
    module = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer, _convert_="all")
    context = context_length(module.model.config)
    for prompt in (prompt for callback in callbacks for prompt in callback.prompts):
        problem = prompt_problem(tokenizer, prompt, context)
        if problem is not None:
            raise LMTrainError(
                f"samples.prompts: {quote(prompt)} {problem.reason}: pass a --data that holds "
                "the prompts' characters, other prompts (--lmtrain-args='samples.prompts=[...]') "
                "or no samples (--lmtrain-args=callbacks.text_samples=null)"
            )


def tiny_shakespeare(path: Path | None) -> Path:
    """`--data`, or the verified copy that `experiment=shakespeare_char` downloads to data/."""
    if path is not None:
        if not path.is_file():
            sys.exit(f"error: --data {path} is not a file: pass Tiny Shakespeare's input.txt")
        return path.resolve()
    try:
        return ShakespeareSource(download_dir=str(ROOT / "data" / "shakespeare")).download()
    except LMTrainError as err:  # its advice names data.source.path, an lmtrain.train key
        failure = str(err).split(": set ")[0]
        sys.exit(f"error: {failure}: pass --data <input.txt> (make bench DATA=<input.txt>)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", choices=list(EXPERIMENTS), default="baseline")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command")
    parser.add_argument("--steps", type=int, default=None, help="default: each recipe's own")
    parser.add_argument(
        "--data", type=Path, default=None, help="Tiny Shakespeare's input.txt (default: downloaded)"
    )
    parser.add_argument("--nanogpt", type=Path, default=None, help="a prepared nanoGPT checkout")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads of every command (default: every core this process may use)",
    )
    parser.add_argument("--lmtrain-args", default="", help="extra overrides for lmtrain.train")
    parser.add_argument(
        "--trainer-args",
        default="",
        help="trainer_recipe.py options: --trainer-args='--optim adamw_torch'",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "logs" / "bench" / "latest.json")
    args = parser.parse_args()
    problems = [f"--repeats {args.repeats}: pass 1 or more"] if args.repeats < 1 else []
    if args.steps is not None and args.steps < 1:
        problems.append(f"--steps {args.steps}: pass 1 or more, or leave it out (the recipe's own)")
    if args.threads < 1:
        problems.append(f"--threads {args.threads}: pass 1 or more")
    extra: list[str] = []
    trainer_extra: list[str] = []
    for flag, value, split in (
        ("--lmtrain-args", args.lmtrain_args, extra),
        ("--trainer-args", args.trainer_args, trainer_extra),
    ):
        try:
            split.extend(shlex.split(value))
        except ValueError as err:  # an unbalanced quote: shlex's traceback, after the data work
            problems.append(f"{flag} {value!r}: {err}: balance its quotes")
    if problems:
        parser.error("; ".join(problems))
    check_out(args.out)
    data, out = tiny_shakespeare(args.data), args.out.resolve()
    nanogpt = args.nanogpt.resolve() if args.nanogpt else None
    if nanogpt and not (nanogpt / "train.py").is_file():
        sys.exit(f"error: --nanogpt {args.nanogpt} has no train.py: pass a nanoGPT checkout")
    if nanogpt and not (nanogpt / "data" / "shakespeare_char" / "train.bin").is_file():
        sys.exit(
            f"error: --nanogpt {args.nanogpt} has no data/shakespeare_char/train.bin: run "
            "`python data/shakespeare_char/prepare.py` in that checkout first"
        )
    if args.recipe == "fast" and nanogpt is None:
        sys.exit("error: --recipe fast is timed against nanoGPT: pass --nanogpt <checkout>")
    experiment = EXPERIMENTS[args.recipe]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.chdir(ROOT)  # where lmtrain runs, so its relative paths.data_dir (the token cache) agrees
    try:
        prepare_lmtrain_data(experiment, data, extra)
    except LMTrainError as err:
        sys.exit(f"error: --data {args.data or data}: {err}")

    commands = recipe_commands(args, experiment, data, nanogpt, extra, trainer_extra)
    with tempfile.TemporaryDirectory(prefix="bench_recipe-") as tmp:
        run_side_by_side(commands, args.repeats, Path(tmp), env)

    results = {c.name: summary(c) for c in commands}
    ours = results["lmtrain"]["median_wall_s"]
    others = {n: r["median_wall_s"] for n, r in results.items() if n != "lmtrain"}
    fastest = min(others, key=others.get) if others else None
    record = {
        "experiment": experiment,
        "commands": results,
        "lmtrain_vs_fastest_other": ours / others[fastest] if fastest else None,
        "fastest_other": fastest,
        "settings": {
            "repeats": args.repeats,
            "steps": args.steps,
            "threads": args.threads,
            "data": str(data),
            "lmtrain_args": extra,
            "trainer_args": trainer_extra,
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    report = json.loads(out.read_text()) if out.is_file() else {}
    recipes = report.get("recipe") if isinstance(report.get("recipe"), dict) else {}
    report["recipe"] = {**recipes, args.recipe: record}
    write_report(out, report)

    print(f"\nrecipe {args.recipe} ({experiment}), {args.threads} threads, {args.repeats} repeats")
    print(f"{'command':>10} {'median s':>9} {'outside loop s':>15}  {'runs s':<24} val loss")
    for name, r in results.items():
        walls = " ".join(f"{run['wall_s']:.1f}" for run in r["runs"])
        losses = " ".join(f"{run['val_loss'] or float('nan'):.4f}" for run in r["runs"])
        outside = r["median_outside_loop_s"]
        outside_text = f"{outside:15.1f}" if outside is not None else f"{'-':>15}"
        print(f"{name:>10} {r['median_wall_s']:9.1f} {outside_text}  {walls:<24} {losses}")
    first_log, startup = (
        results["lmtrain"][f"median_{k}"] for k in ("to_first_log_s", "startup_s")
    )
    if first_log is not None:
        to_step = f", {startup:.1f} s to its first step" if startup is not None else ""
        print(f"lmtrain (medians): {first_log:.1f} s to its first log line{to_step}")
    if fastest:
        target = " (target <= 0.33)" if args.recipe == "fast" else ""
        ratio = record["lmtrain_vs_fastest_other"]
        print(f"lmtrain / {fastest}: {ratio:.3f}{target}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
