"""The startup clock's import mark belongs to the process that took it.

Under a submitit launcher `lmtrain.train.train` is pickled by value, `IMPORTS_DONE` with it: each
job's clock got the launcher's reading, from before the job's process started, and reported
`time/startup/imports_s` < 0 and the launcher's wait in `config_s` (red team).
"""

from __future__ import annotations

import os
import time

import pytest

from lmtrain.callbacks.startup import ProcessMark, StartupClock, seconds_since_process_start


@pytest.fixture
def first_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next clock is this process's first, which counts from the process start."""
    monkeypatch.setattr(StartupClock, "_first_in_process", True)


def test_another_process_mark_is_left_out(first_clock: None) -> None:
    # The launcher's mark: another pid, taken a minute before this process started.
    launchers = ProcessMark(
        os.getpid() + 1, time.perf_counter() - seconds_since_process_start() - 60
    )
    clock = StartupClock(launchers)
    clock.mark("config")
    phases = clock.phases()
    assert list(phases) == ["config"]  # counted from this process's start, with its imports
    assert phases["config"] == pytest.approx(seconds_since_process_start(), abs=0.5)


def test_this_process_mark_is_kept_and_no_phase_is_negative(first_clock: None) -> None:
    # A fork's mark (imports already done) may fall within the kernel's 10 ms before its start.
    since_start = seconds_since_process_start()
    clock = StartupClock(ProcessMark(os.getpid(), time.perf_counter() - since_start - 0.01))
    clock.mark("config")
    assert list(clock.phases()) == ["imports", "config"]
    assert min(clock.phases().values()) >= 0
    assert sum(clock.phases().values()) == pytest.approx(since_start, abs=0.5)
