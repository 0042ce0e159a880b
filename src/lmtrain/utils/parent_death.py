"""DDP ranks that Lightning's launcher starts end when rank 0 does.

Lightning starts ranks > 0 with `subprocess.Popen` from rank 0. When rank 0 dies before the
process group forms (a SIGTERM or SIGKILL during start-up), nothing stops them: they wait at the
rendezvous for its timeout (30 minutes by default), holding a GPU each. Linux's
`prctl(PR_SET_PDEATHSIG)` has the kernel kill such a rank when rank 0 exits. No package in our
dependencies wraps prctl, so it is one ctypes call here. torchrun and SLURM supervise their own
ranks, and other systems keep the old behaviour.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def started_by_lightning_launcher() -> bool:
    """A rank > 0 of Lightning's own launcher (not torchrun's, not SLURM's)."""
    return (
        int(os.environ.get("LOCAL_RANK") or 0) > 0
        and "TORCHELASTIC_RUN_ID" not in os.environ
        and "SLURM_PROCID" not in os.environ
    )


def end_with_parent() -> str | None:
    """For a rank > 0 that Lightning started on Linux: be killed when rank 0 exits. Returns the
    line to stop with when rank 0 is already gone (it died while this rank was starting)."""
    if not sys.platform.startswith("linux") or not started_by_lightning_launcher():
        return None
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return None  # refused (a sandbox): the rank runs as it did before, unprotected
    if parent == 1 or os.getppid() != parent:
        return (
            f"rank {os.environ['LOCAL_RANK']}: rank 0, which started this rank, has ended: "
            "ending too (see rank 0's output for why)"
        )
    return None
