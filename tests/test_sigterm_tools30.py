"""A SIGTERM to lmtrain.generate mid-work ends it in one line, exit 143 (red team rev_sig30).

generate and export had no SIGTERM handling of their own: the default action ended them with
no line (an export's temporary folder left beside out_dir), where a Ctrl-C says `interrupted`;
eval's line spoke of resuming a run with `overwrite_run=true`, which eval refuses.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from lmtrain.utils.sigterm_exit import terminated_line
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.killed_runs import start


def test_a_sigterm_to_generate_mid_work_is_one_line_and_exit_143(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    trained = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}"))
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = tmp_path / "generate.out"
    command = [sys.executable, "-m", "lmtrain.generate", f"ckpt_path={run}/checkpoints/last.ckpt"]
    command += [f"paths.root_dir={tmp_path}", "num_samples=3000", "max_new_tokens=60"]
    proc = start([*command, "stop_at_eos=false", "device=cpu"], log)
    deadline = time.monotonic() + 120
    while "Generating from" not in log.read_text() and time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
    last = log.read_text().strip().splitlines()[-1]
    assert last == "error: terminated by SIGTERM before generate finished: run the command again"


def test_eval_and_export_are_told_to_run_again_and_train_how_to_resume(tmp_path: Path) -> None:
    # eval's line said to start it again with overwrite_run=true, which eval refuses.
    for task in ("evaluate", "export"):
        line = terminated_line(task, str(tmp_path))
        assert line == f"terminated by SIGTERM before {task} finished: run the command again"
    assert "overwrite_run=true" in terminated_line("train", str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert f"ckpt_path=last hydra.run.dir={tmp_path}" in terminated_line("train", str(tmp_path))
