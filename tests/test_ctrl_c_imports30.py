"""A Ctrl-C during an entry point's imports ends as one anywhere else does: `interrupted`, 130.

The imports are a command's first seconds, when a mistyped argument is noticed; a Ctrl-C then
was Python's KeyboardInterrupt traceback from inside torch's or transformers' import. A fresh
interpreter (not the suite's warm fork, whose imports are done) gets SIGINT, as a terminal sends
it, once torch's library is loaded and Lightning's and transformers' imports are still ahead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT


def torch_loaded(pid: int) -> bool:
    try:
        return "libtorch_cpu" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_a_ctrl_c_during_the_imports_is_one_line_and_exit_130(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    # An override Hydra refuses: a Ctrl-C that came after the imports would lose to its error.
    command = [sys.executable, "-m", "lmtrain.train", f"paths.root_dir={tmp_path}", "nokey=1"]
    child = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job ignores SIGINT; a terminal's foreground command does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not torch_loaded(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-3000:]
    assert err.strip() == "interrupted", err[-3000:]
    assert "Traceback" not in out + err
    assert not (tmp_path / "logs").exists()  # stopped before Hydra made a run folder
