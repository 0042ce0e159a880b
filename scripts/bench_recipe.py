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
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import compose_train
from bench_out import check_out, write_report

from lmtrain.data.shakespeare import ShakespeareSource
from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = {"baseline": "shakespeare_char", "fast": "shakespeare_char_fast"}
NANOGPT_STEPS = 2000  # nanoGPT's CPU recipe: max_iters (it trains max_iters + 1 steps)
NANOGPT_EVAL = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")
NANOGPT_ITER = re.compile(r"iter \d+: loss [\d.]+, time ([\d.]+)ms")


@dataclass
class Command:
    """One side of the comparison: how to run it, and what its runs gave."""

    name: str
    argv: list[str]
    cwd: Path
    parse: Any  # (output text, run folder) -> {"val_loss": ..., ...}
    runs: list[dict[str, Any]] = field(default_factory=list)


def nanogpt_command(checkout: Path, steps: int, out_dir: Path) -> list[str]:
    """nanoGPT's README CPU command at this repo's block, batch and model size."""
    eval_interval = 250 if steps % 250 == 0 else steps  # so that the last step is evaluated
    return [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        "--block_size=64",
        "--batch_size=12",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        f"--max_iters={steps}",
        f"--lr_decay_iters={steps}",
        "--dropout=0.0",
        f"--eval_interval={eval_interval}",
        f"--out_dir={out_dir}",  # its checkpoints go to a temporary folder, not the checkout
    ]


def parse_nanogpt(output: str, run_dir: Path) -> dict[str, Any]:
    """Its last evaluation (20 random val batches) and the time inside its training loop."""
    evals = NANOGPT_EVAL.findall(output)
    loop_s = sum(float(ms) for ms in NANOGPT_ITER.findall(output)) / 1000
    if not evals:
        return {"val_loss": None}
    return {"val_loss": float(evals[-1][1]), "val_at_step": int(evals[-1][0]), "in_loop_s": loop_s}


def parse_trainer(output: str, run_dir: Path) -> dict[str, Any]:
    """The script's `val_loss=` (whole val split) and Trainer's train_runtime."""
    loss = re.findall(r"^val_loss=([\d.]+)$", output, re.MULTILINE)
    train_s = re.findall(r"train_s=([\d.]+)", output)
    return {
        "val_loss": float(loss[-1]) if loss else None,
        "in_loop_s": float(train_s[-1]) if train_s else None,
    }


def parse_lmtrain(output: str, run_dir: Path) -> dict[str, Any]:
    """metrics.json's val/loss (whole val split), time in the training loop and time
    to the first step; from the run's log, the time of its first line (after imports and config)."""
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        return {"val_loss": None}
    metrics = json.loads(metrics_file.read_text())
    result = {
        "val_loss": metrics.get("val/loss"),
        "in_loop_s": metrics.get("time/train_s"),
        "steps": metrics.get("trainer/global_step"),
        # Process start to the end of the first optimizer step, where lmtrain records it.
        "startup_s": metrics.get("time/startup_s"),
    }
    logs = sorted(run_dir.glob("*.log"))
    first = logs[0].read_text().split("\n", 1)[0] if logs else ""
    stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", first)
    if stamp:
        result["first_log_at"] = datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return result


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


def run_once(command: Command, run_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `command` to its exit; its wall time, and what its parser reads from it."""
    log_path = run_dir.with_suffix(".out")
    argv = [a.replace("{run_dir}", str(run_dir)) for a in command.argv]
    with log_path.open("w") as log:
        started_at, start = time.time(), time.perf_counter()
        code = subprocess.call(argv, cwd=command.cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        wall_s = time.perf_counter() - start
    output = log_path.read_text(errors="replace")
    if code != 0:
        tail = "\n".join(output.splitlines()[-15:])
        sys.exit(f"{tail}\nerror: {command.name} failed (exit {code}): {shlex.join(argv)}")
    result = {"wall_s": wall_s, **command.parse(output, run_dir)}
    if "first_log_at" in result:  # lmtrain: imports, Hydra, config before its first log line
        result["to_first_log_s"] = result.pop("first_log_at") - started_at
    if result.get("in_loop_s") is not None:
        result["outside_loop_s"] = wall_s - result["in_loop_s"]
    return result


def summary(command: Command) -> dict[str, Any]:
    """Medians over the runs of each figure that every run has."""
    medians = {}
    for key in ("wall_s", "val_loss", "outside_loop_s", "to_first_log_s", "startup_s"):
        values = [r[key] for r in command.runs if r.get(key) is not None]
        medians[f"median_{key}"] = statistics.median(values) if values else None
    return {**medians, "runs": command.runs, "command": shlex.join(command.argv)}


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
    extra = shlex.split(args.lmtrain_args)
    experiment = EXPERIMENTS[args.recipe]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    os.chdir(ROOT)  # where lmtrain runs, so its relative paths.data_dir (the token cache) agrees
    try:
        prepare_lmtrain_data(experiment, data, extra)
    except LMTrainError as err:
        sys.exit(f"error: --data {args.data or data}: {err}")

    commands = []
    if nanogpt is not None:
        steps = NANOGPT_STEPS if args.steps is None else args.steps
        argv = nanogpt_command(nanogpt, steps, Path("{run_dir}"))
        commands.append(Command("nanogpt", argv, nanogpt, parse_nanogpt))
    if args.recipe == "baseline":
        argv = [sys.executable, str(ROOT / "scripts" / "trainer_recipe.py"), f"--data={data}"]
        argv += [f"--steps={args.steps}"] if args.steps is not None else []
        argv += shlex.split(args.trainer_args)
        commands.append(Command("hf_trainer", argv, ROOT, parse_trainer))
    argv = [sys.executable, "-m", "lmtrain.train", f"experiment={experiment}"]
    argv += [f"data.source.path={data}", "hydra.run.dir={run_dir}"]
    # The baseline as the issue timed it (CSV); the fast recipe with its W&B logger (offline).
    argv += ["logger=csv"] if args.recipe == "baseline" else []
    argv += [f"trainer.max_steps={args.steps}"] if args.steps is not None else []
    commands.append(Command("lmtrain", [*argv, *extra], ROOT, parse_lmtrain))

    with tempfile.TemporaryDirectory(prefix="bench_recipe-") as tmp:
        for repeat in range(args.repeats):
            for command in commands if repeat % 2 == 0 else commands[::-1]:
                run = run_once(command, Path(tmp) / f"{command.name}-{repeat}", env)
                command.runs.append(run)
                print(
                    f"{command.name:>10} run {repeat}: {run['wall_s']:7.1f} s, "
                    f"val loss {run['val_loss'] or float('nan'):.4f}",
                    file=sys.stderr,
                    flush=True,
                )

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
            "trainer_args": shlex.split(args.trainer_args),
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
