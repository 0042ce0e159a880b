"""Run lmtrain's entry points as a user would: `python -m lmtrain.<module> key=value ...`,
and the overrides of a tiny, fast CLI run (`tiny_cli`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.checkpoints import TINY_GPT2, write_corpus

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


# Tiny and short: 4 steps, validation at 2 and 4 (2 batches), no progress bar.
TINY_CLI = [
    *TINY_GPT2,
    "data=text_files",
    "data.tokenizer.kind=char",
    "data.block_size=32",
    "data.batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "samples.max_new_tokens=8",
]


def one_file_corpus(folder: Path) -> Path:
    """One text file (~20 KB): split by characters, its last 10% is val."""
    docs = write_corpus(folder / "docs")
    path = folder / "corpus.txt"
    path.write_text("".join(p.read_text() for p in sorted(docs.iterdir())))
    return path


def tiny_cli(tmp_path: Path, data_dir: Path, *overrides: str) -> list[str]:
    """CLI overrides for a tiny run on a fresh corpus, logs under tmp_path/logs."""
    corpus = one_file_corpus(tmp_path / "corpus")
    return [
        *TINY_CLI,
        f"data.source.path={corpus}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *overrides,
    ]
