"""The startup clock counts from the process start, which Python does not record."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lmtrain.callbacks.startup import StartupClock, seconds_since_process_start

SLEEP_THEN_READ = (
    "import time; time.sleep(0.6); "
    "from lmtrain.callbacks.startup import seconds_since_process_start as s; print(s())"
)


def test_seconds_since_process_start_counts_the_time_before_the_first_line() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SLEEP_THEN_READ], capture_output=True, text=True, check=True
    )
    assert 0.6 <= float(out.stdout) < 30


def test_later_clocks_of_a_process_count_from_their_own_start() -> None:
    # A multirun's second job imports nothing: it has no import phase.
    StartupClock(imports_done=0.0)
    later = StartupClock(imports_done=0.0)
    later.mark("config")
    assert list(later.phases()) == ["config"]
    assert later.phases()["config"] == pytest.approx(0.0, abs=0.5)
    assert seconds_since_process_start() > 0
