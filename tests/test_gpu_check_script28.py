"""scripts/gpu_check.sh where it cannot run for real: without a GPU, and on a "GPU" whose torch
or runs fail. It used to truncate the previous GPU results (logs/gpu_check/, which
`make clean-logs` keeps as results) and run `make install` before finding out that there was no
GPU, printed a bare traceback where the GPT-2 run had failed, and read "ok" for GPU tests that
all skipped.

No GPU, no real run: the script runs from a copy of itself in a temporary folder, with a PATH
whose `nvidia-smi` and `make` are stubs, and (where a "GPU" is there) a `.venv/bin/python` that
stands in for the runs and hands `-c` and `-` programs to the real Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error, tree_digest

PLANTED = {"summary.md": "# real H100 results\n", "steps.log": "real H100 step log\n"}
GPU_LISTED = 'echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"'
NO_GPU = {  # what nvidia-smi prints where no GPU can be used
    "driver": "echo \"NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA"
    ' driver."; exit 9',
    "no devices": 'echo "No devices were found"; exit 6',
    "lists none": "exit 0",
}
# The stand-in for the project's Python: runs pass but the GPT-2 one, GPU tests skip (FAKE_SKIP),
# and the programs the script hands it (`-c`, `-`) run in the real Python.
FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >>"$GPU_CHECK_CALLS"
case "$1 $2" in
  "-c "*) [ "${{FAKE_TORCH_CUDA:-0}}" = 1 ] && exit 0; exec {python} "$@" ;;
  "- "*) exec {python} "$@" ;;
  "-m pytest") echo "SKIPPED [2] tests/test_configs.py:117: ${{FAKE_SKIP:-needs a GPU}}"
    echo "1 passed, 2 skipped in 0.50s"; exit 0 ;;
  "-m lmtrain.train") [[ " $* " == *"/gpt2 "* ]] && {{ echo "no CUDA" >&2; exit 3; }}; exit 0 ;;
esac
exit 0
"""


def checkout(tmp_path: Path, nvidia_smi: str | None) -> tuple[Path, Path, dict[str, str]]:
    """A folder holding scripts/gpu_check.sh and planted previous results in logs/gpu_check/, a
    bin folder of stubs (`make`, and `nvidia-smi` running `nvidia_smi` unless None) and the
    links the script needs before its GPU check; returns (folder, bin, environment)."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "gpu_check.sh", root / "scripts" / "gpu_check.sh")
    results = root / "logs" / "gpu_check"
    results.mkdir(parents=True)
    for name, text in PLANTED.items():
        (results / name).write_text(text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stubs = {"make": 'echo "make $*" >>"$GPU_CHECK_CALLS"'}
    if nvidia_smi is not None:
        stubs["nvidia-smi"] = nvidia_smi
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    dirname = shutil.which("dirname")
    assert dirname is not None
    (bin_dir / "dirname").symlink_to(dirname)
    calls = tmp_path / "calls.log"
    calls.touch()
    (tmp_path / "tmp").mkdir()
    env = {
        "PATH": str(bin_dir),  # nothing but the stubs: no real nvidia-smi, and no program runs
        "HOME": str(tmp_path),
        "GPU_CHECK_CALLS": str(calls),
        "TMPDIR": str(tmp_path / "tmp"),  # where the script's run folder goes (mktemp -d)
        "CUDA_VISIBLE_DEVICES": "",  # a real GPU of this machine stays out of the real torch
    }
    return root, bin_dir, env


def gpu_check(root: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`bash scripts/gpu_check.sh` in `root`, as a user runs it."""
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, "scripts/gpu_check.sh"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def with_gpu(tmp_path: Path, torch_cuda: bool) -> tuple[Path, dict[str, str]]:
    """A checkout whose nvidia-smi lists a GPU and whose .venv/bin/python is the stand-in,
    torch's check passing where `torch_cuda`; every program of the machine on the PATH."""
    root, bin_dir, env = checkout(tmp_path, GPU_LISTED)
    python = root / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    env["FAKE_TORCH_CUDA"] = "1" if torch_cuda else "0"
    return root, env


@pytest.mark.parametrize("nvidia_smi", [None, *NO_GPU], ids=["missing", *NO_GPU])
def test_without_a_gpu_it_refuses_in_one_line_and_changes_nothing(
    tmp_path: Path, nvidia_smi: str | None
) -> None:
    """No nvidia-smi, one that cannot reach a driver, or one listing no GPU: one error line, a
    non-zero exit, the previous results as they were, no `make install` and no temporary run
    folder."""
    root, _, env = checkout(tmp_path, None if nvidia_smi is None else NO_GPU[nvidia_smi])
    before = tree_digest(root)

    result = gpu_check(root, env)

    assert_one_line_error(result, "no GPU found", "machine with an NVIDIA GPU", "nothing was")
    assert tree_digest(root) == before
    assert (tmp_path / "calls.log").read_text() == ""  # make never ran
    assert list((tmp_path / "tmp").iterdir()) == []


def test_a_torch_that_sees_no_gpu_stops_it_after_the_install(tmp_path: Path) -> None:
    """nvidia-smi lists a GPU but the installed torch sees none: the install's row, a FAILED
    torch row and one error line, no run started; the previous results kept as *.prev."""
    root, env = with_gpu(tmp_path, torch_cuda=False)

    result = gpu_check(root, env)

    assert_one_line_error(result, "torch sees no GPU")
    results = root / "logs" / "gpu_check"
    summary = (results / "summary.md").read_text()
    assert "| install | ok |" in summary and "| torch_cuda | FAILED" in summary, summary
    assert "gpt2_124m" not in summary, summary
    assert "lmtrain.train" not in (tmp_path / "calls.log").read_text()
    for name, text in PLANTED.items():
        assert (results / f"{name}.prev").read_text() == text


def test_a_failed_run_is_one_failed_row_and_skipped_gpu_tests_fail(tmp_path: Path) -> None:
    """The GPT-2 run fails: one FAILED row, its speed not read (no traceback); the GPU tests
    that all skip (pytest exits 0) read FAILED, not ok."""
    root, env = with_gpu(tmp_path, torch_cuda=True)

    result = gpu_check(root, env)

    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    summary = (root / "logs" / "gpu_check" / "summary.md").read_text()
    rows = [line for line in summary.splitlines() if line.startswith("| gpt2_124m")]
    assert len(rows) == 1 and "FAILED (exit 3" in rows[0], summary
    assert "| gpu_tests | FAILED" in summary, summary
    assert "| generate | ok |" in summary, summary
    assert (root / "logs" / "gpu_check" / "summary.md.prev").read_text() == PLANTED["summary.md"]


def test_the_two_gpu_tests_may_skip_on_a_machine_of_one_gpu(tmp_path: Path) -> None:
    """tests/test_configs.py skips its ddp and fsdp trainers with "needs 2 GPUs" on one GPU,
    the machine the script is sized for: that skip is no test this GPU failed to run."""
    root, env = with_gpu(tmp_path, torch_cuda=True)
    env["FAKE_SKIP"] = "needs 2 GPUs"

    gpu_check(root, env)

    summary = (root / "logs" / "gpu_check" / "summary.md").read_text()
    assert "| gpu_tests | ok |" in summary, summary
