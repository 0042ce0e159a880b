"""Run lmtrain's entry points as a user would: `python -m lmtrain.<module> key=value ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    module: str,
    *overrides: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m lmtrain.<module>` from the project root and capture its output.

    `env` adds environment variables; `preexec_fn` runs in the child before exec (e.g. to drop
    privileges)."""
    base = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", f"lmtrain.{module}", *overrides],
        cwd=ROOT,
        env={**base, **(env or {})},
        preexec_fn=preexec_fn,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wandb_summary(run_dir: Path) -> dict:
    """The offline W&B run under `run_dir/wandb`, read back with `wandb leet inspect`."""
    (run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", "--summary", "--json", str(run)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)
