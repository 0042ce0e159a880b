"""A Ctrl-C outside the task itself ends as one inside it does: `interrupted`, exit 130.

`task_wrapper` turns a Ctrl-C in the task into that line; one that lands outside it, while Hydra
composes the config, between a sweep's jobs, or while a job is named (red team rev_stop29), went
up through Hydra, which reports only `Exception`s, and ended in Python's KeyboardInterrupt
traceback, with no line. Each entry point runs its `main()` inside `interrupt_is_one_line`,
which also ends a sweep that a SIGTERM stopped outside a job's training (`sweep_sigterm`).
One during the entry point's imports (its first seconds, when a mistyped argument is noticed)
was a traceback from inside torch's or transformers' import: `gc_pause.paused_for_imports`,
which wraps them, ends it the same way through `end_interrupted_command`.

A terminal's Ctrl-C reaches every rank of a run (one process group): only rank 0 says
`interrupted`, as it alone prints a run's `error:` line (`task.print_error`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from lmtrain.utils.import_env import launched_rank

# What a shell reports for a process ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130


@contextmanager
def interrupt_is_one_line() -> Iterator[None]:
    """Run the block; a KeyboardInterrupt out of it prints `interrupted` and exits 130."""
    try:
        yield
    except BaseException as stop:
        # A SIGTERM, or a Ctrl-C between jobs, that stopped a sweep (`lmtrain.utils.
        # sweep_sigterm`, imported by the sweep it holds, so not here unless one ran): recorded
        # and said there, then exit 143 or 130.
        sweep_sigterm = sys.modules.get("lmtrain.utils.sweep_sigterm")
        code = sweep_sigterm.end_terminated_sweep(stop) if sweep_sigterm is not None else None
        if code is not None:
            raise SystemExit(code) from None
        if isinstance(stop, KeyboardInterrupt):
            say_interrupted()
            raise SystemExit(INTERRUPTED_EXIT_CODE) from None
        raise


def end_interrupted_command() -> None:
    """After a KeyboardInterrupt in an entry point's imports: when `python -m lmtrain.<name>`
    runs it, print `interrupted` and exit 130; return otherwise (an entry point imported by a
    notebook or a test: the KeyboardInterrupt is the caller's to see)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("lmtrain."):
        say_interrupted()
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None


def say_interrupted(line: str = "interrupted", rank: int | None = None) -> None:
    """Print the line a Ctrl-C ends a command with, on rank 0 alone: `rank`, the run's global
    rank where it is known (Lightning's, which counts the nodes), else the launcher's."""
    if (launched_rank() if rank is None else rank) == 0:
        print(line, file=sys.stderr, flush=True)
