"""`python -m lmtrain.<module>` commands, and `python scripts/<name>.py`, run as forks of one
interpreter that imported the libraries once.

Why: every command of the suite spends ~5 s of its 2 cores importing torch, Lightning,
transformers and W&B before it reads its first override (docs/performance.md, Startup), and the
suite runs about 160 of them. A server per pytest worker imports them once; each command is a
fork of it that takes the command's environment, working folder, arguments and standard streams,
runs the module as `__main__` with `runpy` (what `python -m` does), and ends as the interpreter
ends: atexit handlers, the exit code, an uncaught traceback on stderr. The command is lmtrain's
real entry point, nothing is stubbed. The standard library has nothing like it:
multiprocessing's forkserver runs pickled functions, not commands with their own streams and exit
codes.

The server imports under the session's environment (`tests.helpers.environment`). A command
runs as a new process instead (`run_cli` decides) when its environment differs from that one,
since libraries read some variables once at import, or when it needs a
`preexec_fn`; `LMTRAIN_TEST_WARM_CLI=0` runs every command that way. The server also refuses to
fork once it runs a Python thread besides its own, since threads do not survive a fork.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import runpy
import signal
import socket
import sys
import threading
import time
from typing import Any

# Imported before the libraries, as every entry point does, so they import with the same
# collector state as in a fresh process (lmtrain.utils.gc_pause).
from lmtrain.utils import gc_pause  # noqa: F401  isort: skip

# What most commands import only as they run, 2 s of each wandb-logged command (profiled in a
# fork): W&B (its launch inputs, read by every `wandb.init`), peft (through transformers'
# schedules), the model and generation modules, and lmtrain's lazily imported callbacks and sweep
# checks. Not pandas or pyarrow (Optuna's sweeper, W&B tables, datasets, lm-eval): pyarrow starts
# a jemalloc thread at import, which a fork would not carry.
LAZY_IMPORTS = (
    "wandb",
    "wandb.sdk.launch.inputs.internal",
    "peft",
    "transformers.optimization",
    "transformers.generation.utils",
    "transformers.models.gpt2.modeling_gpt2",
    "transformers.models.llama.modeling_llama",
    "lmtrain.callbacks.lr_monitor",
    "lmtrain.callbacks.wandb_artifact",
    "lmtrain.utils.sweep_checks",
    "lmtrain.utils.optuna_study",
)

# torch's default CPU generator starts from this seed in a fresh process (c10's
# default_rng_seed_val); a fork is given it back in case the imports drew from it.
TORCH_DEFAULT_SEED = 67280421310721


def send(conn: socket.socket, message: dict[str, Any]) -> None:
    conn.sendall((json.dumps(message) + "\n").encode())


def serve(socket_path: str) -> dict[str, Any]:
    """Import the entry points, then fork a command per connection; returns only in a fork that
    is to run a command, with that command's request."""
    import lmtrain.eval
    import lmtrain.export
    import lmtrain.generate
    import lmtrain.strategies.__main__
    import lmtrain.train  # noqa: F401

    for name in LAZY_IMPORTS:
        # A machine with no W&B (scripts/gpu_check.sh on a lent GPU) runs the other loggers.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the supervisors
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(socket_path + ".tmp")
    listener.listen(16)
    os.rename(socket_path + ".tmp", socket_path)  # the client waits for this name
    while True:
        conn, _ = listener.accept()
        request = json.loads(conn.makefile().readline())
        # numpy's and SciPy's OpenBLAS start idle threads at import, and rebuild them in a
        # fork (pthread_atfork); a Python thread would not survive one.
        if threading.active_count() != 1:
            send(conn, {"refused": f"the server has {threading.active_count()} Python threads"})
            conn.close()
            continue
        # pyarrow's jemalloc thread (LAZY_IMPORTS keeps it out; a later library might pull it in).
        if "pyarrow" in sys.modules:
            send(conn, {"refused": "the server imported pyarrow, which starts a jemalloc thread"})
            conn.close()
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            listener.close()
            return supervise(conn, request)
        conn.close()


def supervise(conn: socket.socket, request: dict[str, Any]) -> dict[str, Any]:
    """In a fork of the server: fork the command, tell the client its pid, wait for it, and
    tell the client how it ended. Returns only in the command's process."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command's own subprocesses need it
    pid = os.fork()
    if pid == 0:
        conn.close()
        if request.get("new_session"):  # Popen's start_new_session: a killpg reaches its ranks
            os.setsid()
        return request
    try:
        while request.get("new_session") and pgid(pid) not in (pid, None):
            time.sleep(0.001)  # the test may killpg as soon as it has the pid
        send(conn, {"pid": pid})
        _, status = os.waitpid(pid, 0)
        send(conn, {"returncode": os.waitstatus_to_exitcode(status)})
    finally:  # also when the client gave up (a timeout) and closed the connection
        os._exit(0)


def pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def become_command(request: dict[str, Any]) -> None:
    """Take the command's folder, environment, streams and arguments as `python -m` would have
    them, then run the module as `__main__`; its exit code and exceptions end the process."""
    import random

    import numpy as np
    import torch

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    written = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if request["stderr"] else os.O_APPEND)
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], written),
        (2, request["stderr"], written),
    ):
        if path is None:  # stderr into stdout, a log appended to (Popen's stderr=STDOUT)
            os.dup2(1, fd)
            continue
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    random.seed()
    np.random.seed()
    torch.manual_seed(TORCH_DEFAULT_SEED)
    # Read by torch as it starts (warm_client); numpy's OpenBLAS keeps the server's threads,
    # which changes no number.
    if "OMP_NUM_THREADS" in request["env"]:
        torch.set_num_threads(int(request["env"]["OMP_NUM_THREADS"]))
    if "module" in request:
        sys.path[0] = os.getcwd()  # `python -m` puts the working folder first
        sys.argv = ["-m", *request["args"]]
        # As in a new interpreter, where `lmtrain.train` (a package's `__main__`) is not
        # imported before it runs as `__main__` (runpy warned "found in sys.modules ..." on
        # stderr in every fork); a package itself stays, or its __init__ would run again.
        name = request["module"]
        package = hasattr(sys.modules.get(name), "__path__")
        sys.modules.pop(f"{name}.__main__" if package else name, None)
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    else:  # `python script.py` puts the script's folder first
        sys.path[0] = os.path.dirname(os.path.realpath(request["path"]))
        sys.argv = [request["path"], *request["args"]]
        runpy.run_path(request["path"], run_name="__main__")


if __name__ == "__main__":
    become_command(serve(sys.argv[1]))
