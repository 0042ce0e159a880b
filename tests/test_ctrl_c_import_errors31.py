"""A Ctrl-C during an entry point's imports whose import then fails with another error than
KeyboardInterrupt still ends as a Ctrl-C does: `interrupted`, exit 130 (#31).

Once in a few Ctrl-Cs as a `trainer=ddp_cpu` run started, rank 1 printed a traceback out of
Lightning's import (an import cut short fails in its own way) and exited 1. The test runs the
imports' guard, `gc_pause.paused_for_imports`, in a fresh interpreter that names itself an
lmtrain entry point (as `python -m lmtrain.<name>` does), sends itself a real SIGINT inside it,
and fails the "import" as a cut-short one can.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import ROOT

SCRIPT = """
import os, signal, sys, types
sys.modules["__main__"].__spec__ = types.SimpleNamespace(name="lmtrain.train")
signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker's child ignores it
from lmtrain.utils.gc_pause import paused_for_imports
with paused_for_imports():
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        raise ImportError("cannot import name 'Callback' (most likely due to a circular import)")
"""


def run(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )


def test_an_import_that_fails_after_a_ctrl_c_ends_as_the_ctrl_c() -> None:
    out = run(SCRIPT)
    assert (out.returncode, out.stderr) == (130, "interrupted\n"), out.stderr[-2000:]


def test_an_import_that_fails_on_its_own_is_still_its_traceback() -> None:
    out = run(SCRIPT.replace("os.kill(os.getpid(), signal.SIGINT)", "raise KeyboardInterrupt"))
    # A KeyboardInterrupt raised by code, not a Ctrl-C: the ImportError is the command's error.
    assert out.returncode == 1 and "ImportError: cannot import name" in out.stderr, out.stderr
