"""lmtrain's entry points run as a user runs them, `python -m lmtrain.<module> key=value ...`,
the overrides of a tiny CLI run, a sweep of tiny runs, and what an offline W&B run recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tests.helpers import ROOT
from tests.helpers.compose import TINY
from tests.helpers.corpora import one_file_corpus
from tests.helpers.environment import SESSION_ENVIRONMENT
from tests.helpers.warm_client import run_warm


def command_environment(start: Mapping[str, str]) -> dict[str, str]:
    """`start` with W&B offline and quiet, and Hydra's one-line errors, as commands run here."""
    return {**start, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}


def run_cli(
    module: str,
    *overrides: str,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 600,
    fresh: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m lmtrain.<module>` from the project root and capture its output.

    `env` adds environment variables; `preexec_fn` runs in the child before exec (e.g. to drop
    privileges). A command whose environment is the worker's runs as a fork of an interpreter
    that has already imported the libraries (`tests.helpers.warm_client`), unless `fresh` asks
    for a new interpreter (a test of the imports themselves)."""
    full_env = {**command_environment(os.environ), **(env or {})}
    if preexec_fn is None and not fresh:
        server_env = command_environment(SESSION_ENVIRONMENT)
        command = ["-m", f"lmtrain.{module}", *overrides]
        warm = run_warm(command, full_env, timeout, server_env)
        if warm is not None:
            return warm
    return subprocess.run(
        [sys.executable, "-m", f"lmtrain.{module}", *overrides],
        cwd=ROOT,
        env=full_env,
        preexec_fn=preexec_fn,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_cli(
    tmp_path: Path, data_dir: Path, *overrides: str, corpus: Path | None = None
) -> list[str]:
    """CLI overrides for a `TINY` run with a char tokenizer on `corpus` (default: a fresh
    `one_file_corpus` in tmp_path/corpus), logs under tmp_path/logs."""
    corpus = corpus or one_file_corpus(tmp_path / "corpus")
    return [
        *TINY,
        "data=text_files",
        "data.tokenizer.kind=char",
        f"data.source.path={corpus}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        *overrides,
    ]


def train_csv_run(root: Path, data_dir: Path, corpus: Path, name: str, *overrides: str) -> Path:
    """A tiny run in `root/name` on `corpus`, metrics in csv/, that must end with exit 0."""
    run = root / name
    overrides = ("logger=csv", f"hydra.run.dir={run}", *overrides)
    out = run_cli("train", *tiny_cli(root, data_dir, *overrides, corpus=corpus))
    assert out.returncode == 0, f"{name}:\n{out.stderr[-3000:]}"
    return run


# The tiny overrides of most sweeps' jobs: 2 steps, metrics in csv/ (no W&B run to wait for).
SWEEP_JOB = ("trainer.max_steps=2", "logger=csv")


def run_sweep(
    tmp_path: Path,
    data_dir: Path,
    sweep: Path,
    *overrides: str,
    optuna: bool = False,
    launcher: str | None = None,
    tiny: Sequence[str] = SWEEP_JOB,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """A sweep of `python -m lmtrain.train` into the folder `sweep`: `-m` (with `optuna`, an
    Optuna search, `hparams_search=optuna`) under `hydra/launcher=<launcher>` (the configured
    launcher when None), of `tiny_cli` runs with `tiny`, then `overrides`, added."""
    return run_cli(
        "train",
        "hparams_search=optuna" if optuna else "-m",
        *([f"hydra/launcher={launcher}"] if launcher else []),
        *tiny_cli(tmp_path, data_dir, *tiny),
        *overrides,
        f"hydra.sweep.dir={sweep}",
        env=env,
        timeout=timeout,
    )


def fast_dev_run_cli(corpus: Path, tmp_path: Path) -> list[str]:
    """CLI overrides for one step (debug=fdr) of the default model with a char tokenizer on
    `corpus` (a file, folder or glob): enough to reach every check of the data."""
    return [
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "logger=none",
        "debug=fdr",
    ]


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of the offline W&B run under `run_dir/wandb`, read back with
    `wandb leet inspect`."""
    return [json.loads(line) for line in _wandb_inspect(run_dir, "--json").splitlines()]


def wandb_summary(run_dir: Path) -> dict:
    """The summary of the offline W&B run under `run_dir/wandb`: state, exit code, config and
    the last value of each metric."""
    return json.loads(_wandb_inspect(run_dir, "--summary", "--json"))


def _wandb_inspect(run_dir: Path, *flags: str) -> str:
    (run,) = sorted((run_dir / "wandb").glob("offline-run-*"))
    return inspect_session(run, *flags)


def inspect_session(session: Path, *flags: str) -> str:
    """`wandb leet inspect` of one offline session folder (`offline-run-*`); `--json` as default."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb_cli), "leet", "inspect", *(flags or ("--json",)), str(session)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout
