"""Which lmtrain entry point a process runs, for a process that re-runs itself.

Lightning's DDP launcher starts ranks > 0 by re-running `__main__` (`python -m <its module>`);
under a submitit launcher `__main__` is submitit's job runner, and a task arrives pickled by
value. Split from `lmtrain.utils.launch`, which points the ranks at the entry point.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def main_module_as(entry_module: str | None) -> Iterator[None]:
    """While inside, `__main__` and `sys.argv[0]` say that this process runs `entry_module`.

    A process that re-runs itself (Lightning's DDP launcher) reads `__main__.__spec__` and
    argv[0]. A job started by submitit runs under submitit's `_submit` module, whose command
    line is a job folder: ranks started as it would exit 2 at their first argument and leave
    rank 0 waiting for them. Nothing changes when `entry_module` is already `__main__`.
    """
    import importlib.util

    main = sys.modules["__main__"]
    main_spec = getattr(main, "__spec__", None)
    running = main_spec.name if main_spec is not None else None
    spec = None
    if entry_module is not None and running != entry_module:
        spec = importlib.util.find_spec(entry_module)
    if spec is None or spec.origin is None:
        yield
        return
    argv0 = sys.argv[0]
    main.__spec__, sys.argv[0] = spec, spec.origin
    try:
        yield
    finally:
        main.__spec__ = main_spec
        sys.argv[0] = argv0


def entry_module_of(task: Callable[..., object]) -> str | None:
    """The lmtrain module that defines `task` (`lmtrain.train`), from its module's file: under
    submitit the task arrives pickled by value, its `__module__` says `__main__` and its code
    `<dynamic-code>`, but its globals keep `__file__`. None for a function outside lmtrain."""
    function = inspect.unwrap(task)
    source = getattr(function, "__globals__", {}).get("__file__")
    if not source:
        return None
    file = Path(source).resolve()
    package_parent = Path(__file__).resolve().parents[2]  # src/ (utils/entry_module.py)
    if package_parent not in file.parents or file.suffix != ".py":
        return None
    return ".".join(file.relative_to(package_parent).with_suffix("").parts)
