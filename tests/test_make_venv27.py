"""A `.venv` linked to another checkout's venv ran that checkout's lmtrain: its editable install
points at the other src/, and `.installed` only says that something was installed. Every make
target now names the mismatch in one line before running anything."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def make_venv_check(checkout: Path, pythonpath: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        ["make", "--no-print-directory", "venv-check"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_venv_running_another_checkouts_lmtrain_is_refused(tmp_path: Path) -> None:
    checkout = tmp_path / "clone"
    (checkout / "src" / "lmtrain").mkdir(parents=True)
    (checkout / "src" / "lmtrain" / "__init__.py").write_text("")
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, checkout / name)
    shared = Path(sys.executable).parent.parent  # the venv these tests run in, installed
    assert (shared / ".installed").exists()
    (checkout / ".venv").symlink_to(shared)

    # The shared venv's lmtrain is this test's checkout (or PYTHONPATH's), not the clone's.
    other = make_venv_check(checkout, os.environ.get("PYTHONPATH"))
    assert other.returncode != 0
    errors = [line for line in other.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, other.stderr
    assert "not from this checkout's src/lmtrain" in errors[0]
    assert "-m pip install -e '.[dev]'" in errors[0] and "rm .venv" in errors[0]
    assert (checkout / ".venv").is_symlink()  # left as it was

    # The same venv reading the clone's src/ (as an editable install of it would) passes.
    own = make_venv_check(checkout, str(checkout / "src"))
    assert own.returncode == 0, own.stderr
