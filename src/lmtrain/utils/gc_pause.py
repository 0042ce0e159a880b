"""The garbage collector around an entry point's life: paused while it imports, skipped at exit.

Importing torch, Lightning and transformers makes about 440,000 objects that live as long as the
process. While they are made, CPython's collector runs full passes over all of them, 7 during
`import lmtrain.train` (0.7 s of collection; the import takes about 1 s longer with them), and
when the process ends it walks them once more (1.2-1.7 s). Neither finds garbage worth the time
(docs/performance.md). Python has no switch for either, hence this module:

- Importing it pauses the collector (`gc.disable`). An entry point imports it before anything
  else and imports the rest inside `with paused_for_imports():`, which then freezes what the
  imports made (`gc.freeze`: later passes skip those objects) and restarts the collector, also
  when an import fails or is interrupted (a notebook's Ctrl-C must not leave the kernel without
  a collector).
- `without_final_gc()` wraps the entry point's `main()`: whatever way it ends, the objects alive
  then are frozen, so the interpreter's shutdown does not walk them. Everything that must run at
  exit still runs: atexit handlers (logging, W&B, multiprocessing), weakref finalizers, and
  objects freed by reference counting.

Only entry points use it: a Hydra multirun runs its jobs in one process, and freezing between
jobs would keep each job's garbage until the sweep ends. Importing an entry point as a module (a
test, a notebook) pauses and resumes the same way, the first one only (see `resume`), and only
in a process that has not imported torch yet: a notebook that trained with a plain Trainer first
has garbage of its own alive, which a freeze would keep (with its device memory) for the kernel's
life, and its libraries are imported already. Only `python -m` runs `without_final_gc()`.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from lmtrain.utils.interrupt_exit import end_interrupted_command

# Until the first entry point's imports are done; never where torch came before us.
_paused = "torch" not in sys.modules
if _paused:
    gc.disable()


def resume() -> None:
    """After the entry point's imports: freeze what they made, and collect garbage again.

    Only the first entry point imported finds the collector paused. A later one (a notebook's
    `import lmtrain.eval` after a `train()`) freezes nothing: it would have frozen every object
    alive then, the finished run's model and data among them, for the life of the process."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


@contextmanager
def paused_for_imports() -> Iterator[None]:
    """Run the entry point's imports; whatever way they end, `resume()`. A Ctrl-C in them ends
    the command in one line (`interrupt_exit.end_interrupted_command`), also when the import it
    cut short failed with another error than KeyboardInterrupt (a ddp_cpu rank's traceback out
    of torch's or Lightning's import once in a few Ctrl-Cs at start-up): the Ctrl-C is noted by
    a handler of the imports' own, where Python's default one is in place. Nested (an entry
    point imported by another's imports), the outer block owns the handler and ends it."""
    ctrl_c = CtrlCNoted.install()
    try:
        yield
    except BaseException as stop:
        if isinstance(stop, KeyboardInterrupt) or ctrl_c.noted:
            end_interrupted_command()
        raise
    finally:
        ctrl_c.uninstall()
        resume()


class CtrlCNoted:
    """Python's default SIGINT handler (raise KeyboardInterrupt) that also notes the Ctrl-C."""

    def __init__(self, installed: bool) -> None:
        self.installed, self.noted = installed, False

    @classmethod
    def install(cls) -> CtrlCNoted:
        main = threading.current_thread() is threading.main_thread()
        own = main and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        noted = cls(own)
        if own:
            signal.signal(signal.SIGINT, noted.on_sigint)
        return noted

    def on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.noted = True
        raise KeyboardInterrupt

    def uninstall(self) -> None:
        if self.installed and signal.getsignal(signal.SIGINT) == self.on_sigint:
            signal.signal(signal.SIGINT, signal.default_int_handler)


@contextmanager
def without_final_gc() -> Iterator[None]:
    """Run the block; whatever way it ends (a return, an exception, SystemExit), freeze the
    objects alive then, so the interpreter's shutdown does not walk them."""
    try:
        yield
    finally:
        gc.freeze()
