"""Leave the interpreter without its final garbage collection over the libraries' objects.

When a process ends, CPython collects garbage over every object still alive. torch, Lightning,
transformers and the sympy under torch._dynamo leave about 440,000 of them, and that collection
took 1.2 s of every command on a 2-core CPU, a run or a failed config check alike
(docs/performance.md). The operating system frees the memory anyway. Python has no switch for
it, so each entry point ends inside `without_final_gc()`, which freezes the survivors
(`gc.freeze`, public API) as its last step. Everything that must run at exit still runs:
atexit handlers (logging, W&B, multiprocessing), weakref finalizers, and objects freed by
reference counting.

Only a process's entry point uses it: a Hydra multirun runs its jobs in one process, and
freezing between jobs would keep each job's garbage until the sweep ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def without_final_gc() -> Iterator[None]:
    """Run the block; whatever way it ends (a return, an exception, SystemExit), freeze the
    objects alive then, so the interpreter's shutdown does not walk them."""
    try:
        yield
    finally:
        gc.freeze()
