"""Peak memory of a process tree, sampled from /proc, and one figure of a process's /proc file.

PSS splits a shared page between the processes that share it, so the tree's sum is what it
really uses; the sum of RSS counts a page shared by forked workers once per process.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path


class TreeMemory(threading.Thread):
    """Peak PSS and peak summed RSS of a process and all its descendants, sampled from /proc."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval_s = pid, interval_s
        self.peak_pss_kb = self.peak_rss_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pss = rss = 0
            for pid in self._tree(self.pid):
                pss += proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")
                rss += proc_kb(f"/proc/{pid}/status", "VmRSS:")
            self.peak_pss_kb, self.peak_rss_kb = (
                max(self.peak_pss_kb, pss),
                max(self.peak_rss_kb, rss),
            )
            self.done.wait(self.interval_s)

    def _tree(self, pid: int) -> list[int]:
        pids, stack = [], [pid]
        while stack:
            current = stack.pop()
            pids.append(current)
            for task in Path(f"/proc/{current}/task").glob("*"):
                with contextlib.suppress(OSError):  # the task ended meanwhile
                    stack.extend(int(c) for c in (task / "children").read_text().split())
        return pids


def proc_kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
