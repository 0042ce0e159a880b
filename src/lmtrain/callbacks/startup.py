"""`StartupClock`: where the time goes between the command and the first training step.

A small model's run spends seconds before it trains: importing torch, Lightning and their
dependencies, composing the config, finding the token cache, building the model, starting W&B,
and the first batch. `lmtrain.train` marks the end of each phase; after the first optimizer step
this callback logs one line with the split and keeps the figures for `metrics.json`
(`time/startup_s`, `time/startup/<phase>_s`), which `scripts/bench_startup.py` reads.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, NamedTuple

from lightning.pytorch import Callback, LightningModule, Trainer

log = logging.getLogger(__name__)


def seconds_since_process_start() -> float | None:
    """Seconds since this process started, from the kernel's record (Linux), or None.

    Python keeps no process start time; `/proc/self/stat` field 22 is the start in clock ticks
    since boot, and `/proc/uptime` the seconds since boot (both at 10 ms resolution).
    """
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            # The command name (field 2) may hold spaces: fields are counted after its ")".
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            since_boot = float(uptime.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return since_boot - started_ticks / os.sysconf("SC_CLK_TCK")


class ProcessMark(NamedTuple):
    """A `time.perf_counter()` reading and the process that took it.

    `lmtrain.train` takes `IMPORTS_DONE` at import, but under a submitit launcher `train` is
    pickled by value with its globals: the job process got the launcher's reading, taken before
    the job started (imports_s came out negative, config_s held the launcher's wait; more so
    after a requeue). The pid tells such a mark apart.
    """

    pid: int
    at: float

    @classmethod
    def now(cls) -> ProcessMark:
        return cls(os.getpid(), time.perf_counter())


class StartupClock(Callback):
    """Phase end times, in seconds since the process started; the last phase ends with the
    first optimizer step of this process.

    `imports_done` (a `ProcessMark`, or a `time.perf_counter()` value of this process) closes
    the first phase, `imports`. Only the process's first run counts from the process start: the
    next jobs of a multirun count from their own start, with no import phase. A mark of another
    process (a job started by submitit: `train` arrives pickled from the launcher) is left out:
    the first phase, `config`, then counts from the process start and holds the imports too.
    No phase is negative.
    """

    _first_in_process = True

    def __init__(self, imports_done: ProcessMark | float | None = None) -> None:
        now = time.perf_counter()
        started = seconds_since_process_start() if StartupClock._first_in_process else None
        StartupClock._first_in_process = False
        self._marks: list[tuple[str, float]] = []
        self._reported = False
        if started is None:  # a later job, or no /proc: count from here
            self._origin = now
            return
        self._origin = now - started
        if isinstance(imports_done, ProcessMark):
            imports_done = imports_done.at if imports_done.pid == os.getpid() else None
        if imports_done is not None:
            self._marks.append(("imports", imports_done - self._origin))

    def mark(self, phase: str) -> None:
        """`phase` ends now."""
        self._marks.append((phase, time.perf_counter() - self._origin))

    def phases(self) -> dict[str, float]:
        """Seconds spent in each phase, in order."""
        durations, previous = {}, 0.0
        for phase, at in self._marks:
            # The kernel's start time is 10 ms coarse: a fork's imports (none) may end "before".
            durations[phase] = max(at - previous, 0.0)
            previous = max(at, previous)
        return durations

    def metrics(self) -> dict[str, float]:
        """`time/startup_s` (to the first step's end) and `time/startup/<phase>_s`; empty
        before the first step."""
        if not self._reported:
            return {}
        split = {f"time/startup/{phase}_s": s for phase, s in self.phases().items()}
        return {"time/startup_s": self._marks[-1][1], **split}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._reported:
            return
        self.mark("first_step")
        self._reported = True
        if trainer.is_global_zero:
            parts = ", ".join(f"{p} {s:.2f}" for p, s in self.phases().items())
            log.info("Startup: %.2f s to the first step (%s)", self._marks[-1][1], parts)
