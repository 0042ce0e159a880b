"""bench_recipe.py's three commands: how nanoGPT's train.py, the Trainer script and
`lmtrain.train` are run on the same recipe, and what each one's output says.

Each command reports its val loss and its time inside the training loop in its own way (nanoGPT
in its log lines, the Trainer script in `key=value` lines, lmtrain in its run folder's
metrics.json and log), so each has its own parser; they all give the same keys.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from bench_commands import Command
from bench_config import ROOT

NANOGPT_STEPS = 2000  # nanoGPT's CPU recipe: max_iters (it trains max_iters + 1 steps)
NANOGPT_EVAL = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")
NANOGPT_ITER = re.compile(r"iter \d+: loss [\d.]+, time ([\d.]+)ms")


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


def recipe_commands(
    args: argparse.Namespace,
    experiment: str,
    data: Path,
    nanogpt: Path | None,
    extra: list[str],
    trainer_extra: list[str],
) -> list[Command]:
    """The commands of `--recipe`, in their first run's order: nanoGPT (with a checkout), the
    Trainer script (baseline only), lmtrain; a `{run_dir}` in an argv is each run's folder.
    `extra` and `trainer_extra`: `--lmtrain-args` and `--trainer-args`, split (and checked) by
    bench_recipe.py before anything ran."""
    commands = []
    if nanogpt is not None:
        steps = NANOGPT_STEPS if args.steps is None else args.steps
        argv = nanogpt_command(nanogpt, steps, Path("{run_dir}"))
        commands.append(Command("nanogpt", argv, nanogpt, parse_nanogpt))
    if args.recipe == "baseline":
        argv = [sys.executable, str(ROOT / "scripts" / "trainer_recipe.py"), f"--data={data}"]
        argv += [f"--steps={args.steps}"] if args.steps is not None else []
        argv += trainer_extra
        commands.append(Command("hf_trainer", argv, ROOT, parse_trainer))
    argv = [sys.executable, "-m", "lmtrain.train", f"experiment={experiment}"]
    argv += [f"data.source.path={data}", "hydra.run.dir={run_dir}"]
    # The baseline as the issue timed it (CSV); the fast recipe with its W&B logger (offline).
    argv += ["logger=csv"] if args.recipe == "baseline" else []
    argv += [f"trainer.max_steps={args.steps}"] if args.steps is not None else []
    commands.append(Command("lmtrain", [*argv, *extra], ROOT, parse_lmtrain))
    return commands
