"""The pytest side of `tests.helpers.warm_cli`: one server per worker process, started on first
use, and a command run through it as `subprocess.run` would have run it.

Kept apart from the server's module, which pauses the garbage collector when imported."""

from __future__ import annotations

import atexit
import contextlib
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


# Read only as a run starts or ends (W&B's mode by `wandb.init`, Hydra's by its error report):
# a fork that takes the command's environment reads them as a new interpreter would.
RUN_TIME_VARIABLES = {"WANDB_MODE", "HYDRA_FULL_ERROR"}


def comparable(env: dict[str, str]) -> dict[str, str]:
    """`env` without what may differ between the server and a command it forks."""
    ignored = PER_TEST_VARIABLES | RUN_TIME_VARIABLES
    return {key: value for key, value in env.items() if key not in ignored}


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

    def connect(self, command: list[str], env: dict[str, str], request: dict[str, object]):
        """A connection to a fork running `python <command>` (`-m <module> <args>` or
        `<script.py> <args>`) and the fork's pid; None when the server cannot run it (another
        environment, no server, or threads in it)."""
        if not self.forkable(env):
            return None  # a test's own variables, which libraries may read at import
        if not self.ready():
            if not self.ended_told:
                self.ended_told = True
                warnings.warn(
                    f"warm CLI server ended (exit code {self.process.poll()}); "
                    "running every later command as a new process",
                    stacklevel=4,
                )
            return None
        if command[0] == "-m":
            request |= {"module": command[1], "args": command[2:]}
        else:
            request |= {"path": command[0], "args": command[1:]}
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(str(self.path))
        conn.sendall((json.dumps(request | {"env": env}) + "\n").encode())
        replies = conn.makefile()
        started = json.loads(replies.readline())
        if "refused" in started:
            conn.close()
            warnings.warn(
                f"warm CLI server: {started['refused']}; running a new process", stacklevel=4
            )
            return None
        self.forks += 1
        return conn, replies, started["pid"]

    def run(
        self, command: list[str], env: dict[str, str], timeout: float, cwd: Path = ROOT
    ) -> subprocess.CompletedProcess[str] | None:
        """`python <command>` in a fork of the server, as `subprocess.run(...,
        capture_output=True, text=True, timeout=timeout)` would return it, or None."""
        with tempfile.TemporaryDirectory() as streams:
            out, err = Path(streams, "stdout"), Path(streams, "stderr")
            request = {"cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
            connected = self.connect(command, env, request)
            if connected is None:
                return None
            conn, replies, pid = connected
            with conn:
                conn.settimeout(timeout)
                try:
                    ended = json.loads(replies.readline())
                except TimeoutError:
                    os.kill(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(
                        [sys.executable, *command], timeout, out.read_text(), err.read_text()
                    ) from None
            return subprocess.CompletedProcess(
                [sys.executable, *command], ended["returncode"], out.read_text(), err.read_text()
            )

    def start(self, command: list[str], env: dict[str, str], log: Path) -> WarmProcess | None:
        """`python <command>` in a fork of the server, started as `subprocess.Popen(...,
        stdout=<log opened for appending>, stderr=subprocess.STDOUT, start_new_session=True)`
        would start it, or None."""
        request = {"cwd": str(ROOT), "stdout": str(log), "stderr": None, "new_session": True}
        connected = self.connect(command, env, request)
        if connected is None:
            return None
        return WarmProcess([sys.executable, *command], *connected)


class WarmProcess:
    """A command forked from the server, as far as the tests use a `subprocess.Popen`: its pid
    (the leader of its own session), `poll`, `wait`, `communicate` (no pipes: nothing to read),
    `send_signal` and `kill`. A thread waits for the server's word that it ended."""

    def __init__(self, args: list[str], conn: socket.socket, replies, pid: int) -> None:
        self.args, self.pid, self.returncode = args, pid, None
        self.ended, self.lost = threading.Event(), False
        self.conn, self.replies = conn, replies
        threading.Thread(target=self.read_end, daemon=True).start()

    def read_end(self) -> None:
        with self.conn:
            line = self.replies.readline()
        # No word: the supervisor ended (the server was killed); `wait` says so.
        self.lost = not line
        self.returncode = json.loads(line)["returncode"] if line else None
        self.ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        if self.lost:
            raise RuntimeError(f"the warm server's supervisor of pid {self.pid} ended unheard")
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[None, None]:
        self.wait(timeout)
        return None, None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:  # reaped by the supervisor just now: nothing to signal
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_server: WarmServer | None = None
_starting = threading.Lock()  # tests run two commands at a time from threads


def worker_server(server_env: dict[str, str]) -> WarmServer | None:
    """This worker's server, started on first use with `server_env`, the session's environment,
    not the first command's: that one may carry what a library set as the test ran
    (scikit-learn's KMP_* variables), and every later command would then differ from it and run
    as a new interpreter. None under LMTRAIN_TEST_WARM_CLI=0."""
    global _server
    if os.environ.get("LMTRAIN_TEST_WARM_CLI", "1") == "0":
        return None
    with _starting:
        if _server is None:
            _server = WarmServer(server_env)
    return _server


def run_warm(
    command: list[str],
    env: dict[str, str],
    timeout: float,
    server_env: dict[str, str],
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str] | None:
    """`WarmServer.run` on this worker's server, or None."""
    server = worker_server(server_env)
    return None if server is None else server.run(command, env, timeout, cwd)


def start_warm(
    command: list[str], env: dict[str, str], log: Path, server_env: dict[str, str]
) -> WarmProcess | None:
    """`WarmServer.start` on this worker's server, or None."""
    server = worker_server(server_env)
    return None if server is None else server.start(command, env, log)
