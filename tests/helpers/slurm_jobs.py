"""A SLURM job's environment for one process, and an `scontrol` that records its calls: what
Lightning's SLURM environment and auto-requeue read, played on a machine without SLURM."""

from __future__ import annotations

import os
from pathlib import Path

SLURM_JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODELIST": "localhost",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def fake_scontrol(tmp_path: Path) -> dict[str, str]:
    """PATH with an `scontrol` that appends its arguments to tmp_path/scontrol.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
