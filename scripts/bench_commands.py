"""Whole commands timed side by side, for bench_recipe.py: each run a subprocess timed from start
to exit, the commands' order reversed every other repeat, and each command's medians.

Wall time from start to exit is what a user waits for (imports, data, training, evaluation);
alternating the order makes a noisy machine's drift hit every command alike.
"""

from __future__ import annotations

import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Command:
    """One side of the comparison: how to run it, and what its runs gave."""

    name: str
    argv: list[str]
    cwd: Path
    parse: Any  # (output text, run folder) -> {"val_loss": ..., ...}
    runs: list[dict[str, Any]] = field(default_factory=list)


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


def run_side_by_side(
    commands: list[Command], repeats: int, folder: Path, env: dict[str, str]
) -> None:
    """`repeats` runs of every command into its `runs`, in order A, B, C, C, B, A, ...; each
    run's line on stderr as it ends."""
    for repeat in range(repeats):
        for command in commands if repeat % 2 == 0 else commands[::-1]:
            run = run_once(command, folder / f"{command.name}-{repeat}", env)
            command.runs.append(run)
            print(
                f"{command.name:>10} run {repeat}: {run['wall_s']:7.1f} s, "
                f"val loss {run['val_loss'] or float('nan'):.4f}",
                file=sys.stderr,
                flush=True,
            )


def summary(command: Command) -> dict[str, Any]:
    """Medians over the runs of each figure that every run has."""
    medians = {}
    for key in ("wall_s", "val_loss", "outside_loop_s", "to_first_log_s", "startup_s"):
        values = [r[key] for r in command.runs if r.get(key) is not None]
        medians[f"median_{key}"] = statistics.median(values) if values else None
    return {**medians, "runs": command.runs, "command": shlex.join(command.argv)}
