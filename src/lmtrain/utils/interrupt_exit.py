"""A Ctrl-C outside the task itself ends as one inside it does: `interrupted`, exit 130.

`task_wrapper` turns a Ctrl-C in the task into that line; one that lands outside it, while Hydra
composes the config, between a sweep's jobs, or while a job is named (red team rev_stop29), went
up through Hydra, which reports only `Exception`s, and ended in Python's KeyboardInterrupt
traceback, with no line. Each entry point runs its `main()` inside `interrupt_is_one_line`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# What a shell reports for a process ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130


@contextmanager
def interrupt_is_one_line() -> Iterator[None]:
    """Run the block; a KeyboardInterrupt out of it prints `interrupted` and exits 130."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
