"""The environment each test, and every command it starts, begins from: the worker's own, with
W&B offline and quiet, as it was when the session started.

Why a snapshot: libraries change `os.environ` as they import or run (scikit-learn and joblib,
through lm-eval, add KMP_INIT_AT_FORK and KMP_DUPLICATE_LIB_OK; `seed_everything` leaves
PL_GLOBAL_SEED; W&B sets WANDB_SERVICE), and a later test would otherwise start its commands
in what an earlier one left behind."""

from __future__ import annotations

import os

import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Nothing is fetched from the hub (CI sets it too): the benchmark scripts' commands, which run
# offline, then have the session's environment and run as warm forks.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One torch thread per process unless the caller says otherwise: `make test` runs two workers on
# two cores, and each command a test starts is one more process; torch's default of a thread per
# core made them contend (docs/performance.md: 10 of the heaviest files took 0.77x the time).
# The worker has imported torch already (conftest's imports), so its own count is set too.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SESSION_ENVIRONMENT = dict(os.environ)


def restore_session_environment() -> None:
    """`os.environ` as the session started, keeping pytest's PYTEST_CURRENT_TEST."""
    current_test = os.environ.get("PYTEST_CURRENT_TEST")  # pytest's own, removed by pytest
    os.environ.clear()
    os.environ.update(SESSION_ENVIRONMENT)
    if current_test is not None:
        os.environ["PYTEST_CURRENT_TEST"] = current_test
