"""The pytest side of `tests.helpers.warm_cli`: one server per worker process, started on first
use, and a command run through it as `subprocess.run` would have run it.

Kept apart from the server's module, which pauses the garbage collector when imported."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

from tests.helpers import ROOT

# Set by pytest for each test phase; no library reads it at import.
PER_TEST_VARIABLES = {"PYTEST_CURRENT_TEST"}


# Read by torch once, as it starts its thread pool; a fork applies a command's own value with
# `torch.set_num_threads` (tests.helpers.warm_cli), where the server started without one.
THREADS_VARIABLE = "OMP_NUM_THREADS"


def comparable(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in PER_TEST_VARIABLES}


def replayable_threads(env: dict[str, str]) -> bool:
    """Whether a fork can apply `env`'s thread count as torch would have read it."""
    value = env.get(THREADS_VARIABLE, "1")
    return value.isdigit() and int(value) > 0


class WarmServer:
    """A `python -m tests.helpers.warm_cli` process and the environment it imported under."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = comparable(env)
        self.forks = 0  # commands run as forks (a test checks that commands do)
        self.ended_told = False
        self.folder = Path(tempfile.mkdtemp(prefix="lmtrain-warm-"))
        self.path = self.folder / "socket"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.warm_cli", str(self.path)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        atexit.register(self.stop)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    def ready(self, seconds: float = 180) -> bool:
        """Whether the server listens, waiting up to `seconds` for its imports."""
        deadline = time.monotonic() + seconds
        while not self.path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def forkable(self, env: dict[str, str]) -> bool:
        """Whether a command with `env` may run as a fork: the server's environment, but for a
        thread count the fork applies itself."""
        theirs = comparable(env)
        if THREADS_VARIABLE not in self.env and replayable_threads(theirs):
            theirs.pop(THREADS_VARIABLE, None)
        return theirs == self.env

    def run(
        self,
        command: list[str],
        env: dict[str, str],
        timeout: float,
        cwd: Path = ROOT,
    ) -> subprocess.CompletedProcess[str] | None:
        """`python <command>` (`-m <module> <args>` or `<script.py> <args>`) in a fork of the
        server, as `subprocess.run(..., capture_output=True, text=True, timeout=timeout)` would
        return it; None when the server cannot run it (another environment, no server, or
        threads in it)."""
        if not self.forkable(env):
            return None  # a test's own variables, which libraries may read at import
        if not self.ready():
            if not self.ended_told:
                self.ended_told = True
                warnings.warn(
                    f"warm CLI server ended (exit code {self.process.poll()}); "
                    "running every later command as a new process",
                    stacklevel=3,
                )
            return None
        if command[0] == "-m":
            request: dict[str, object] = {"module": command[1], "args": command[2:]}
        else:
            request = {"path": command[0], "args": command[1:]}
        request |= {"env": env, "cwd": str(cwd)}
        command = [sys.executable, *command]
        with tempfile.TemporaryDirectory() as streams, socket.socket(socket.AF_UNIX) as conn:
            out, err = Path(streams, "stdout"), Path(streams, "stderr")
            conn.connect(str(self.path))
            request |= {"stdout": str(out), "stderr": str(err)}
            conn.sendall((json.dumps(request) + "\n").encode())
            replies = conn.makefile()
            started = json.loads(replies.readline())
            if "refused" in started:
                warnings.warn(
                    f"warm CLI server: {started['refused']}; running a new process", stacklevel=3
                )
                return None
            conn.settimeout(timeout)
            try:
                ended = json.loads(replies.readline())
            except TimeoutError:
                os.kill(started["pid"], signal.SIGKILL)
                raise subprocess.TimeoutExpired(
                    command, timeout, output=out.read_text(), stderr=err.read_text()
                ) from None
            self.forks += 1
            return subprocess.CompletedProcess(
                command, ended["returncode"], out.read_text(), err.read_text()
            )


_server: WarmServer | None = None
_starting = threading.Lock()  # tests run two commands at a time from threads


def run_warm(
    command: list[str],
    env: dict[str, str],
    timeout: float,
    server_env: dict[str, str],
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str] | None:
    """Run through this worker's server, or None. The server is started on first use with
    `server_env`, the session's environment, not the first command's: that one may carry what a
    library set as the test ran (scikit-learn's KMP_* variables), and every later command would
    then differ from it and run as a new interpreter."""
    global _server
    if os.environ.get("LMTRAIN_TEST_WARM_CLI", "1") == "0":
        return None
    with _starting:
        if _server is None:
            _server = WarmServer(server_env)
    return _server.run(command, env, timeout, cwd)
