"""The test harness itself: what a test or a module's fixture leaves in this process's
environment does not reach the next test (`session_environment` in tests/conftest.py).

The two tests run in this order, in one process (pytest-xdist's `--dist loadfile` keeps a file
on one worker). Without the fixture, a W&B run's service named in WANDB_SERVICE reached every
later test's CLI runs, which then failed once a test had ended that service.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import wandb

LEFT = ("WANDB_SERVICE", "PL_GLOBAL_SEED", "PL_SEED_WORKERS")


@pytest.fixture(scope="module")
def seeded_by_a_module_fixture() -> None:
    L.seed_everything(7, workers=True)  # what a module fixture's in-process train() does


def test_a_wandb_run_and_a_seed_set_the_environment(tmp_path: Path) -> None:
    L.seed_everything(5, workers=True)
    # The first W&B run in a process also names its service in WANDB_SERVICE.
    wandb.init(mode="offline", dir=tmp_path, project="harness").finish()
    assert os.environ["PL_GLOBAL_SEED"] == "5"


def test_the_next_test_and_its_subprocesses_do_not_see_them(seeded_by_a_module_fixture) -> None:
    assert not {name for name in LEFT if name in os.environ}
    code = f"import os; print(sorted(n for n in {LEFT!r} if n in os.environ))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
