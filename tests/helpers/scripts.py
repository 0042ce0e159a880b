"""The benchmark scripts (`scripts/*.py`) run as a user runs them, `python scripts/<name>.py`,
and loaded as modules for their functions."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from tests.helpers import ROOT
from tests.helpers.cli import command_environment
from tests.helpers.environment import SESSION_ENVIRONMENT
from tests.helpers.warm_client import run_warm

SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py imported as a module (its `main` not run)."""
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python scripts/<name>.py <args>` from `cwd` on one thread, offline, its output captured;
    a fork of the warm server (`tests.helpers.warm_client`) where it can be one."""
    env = {**command_environment(os.environ), "OMP_NUM_THREADS": "1"}  # offline: the session's
    command = [str(SCRIPTS / f"{name}.py"), *args]
    warm = run_warm(command, env, 600, command_environment(SESSION_ENVIRONMENT), cwd)
    if warm is not None:
        return warm
    return subprocess.run(
        [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
