"""A tmpfs for a test (read-only, or small), on every Linux machine that allows either of two ways
to mount one:

- directly, where this process may mount (root with CAP_SYS_ADMIN);
- else in an unprivileged user + mount namespace (`unshare --user --map-root-user --mount`),
  which any user gets on most distributions and CI runners. A process cannot enter one for
  itself halfway through a session, so the test runs whole in a child pytest inside one:
  `mounted_tmpfs`, called by a fixture as the test is set up, records the request and yields a
  plain folder; tests/conftest.py's `pytest_pyfunc_call` then runs the test's node in the child
  (`run_in_namespace`) instead of calling it here, and the child's outcome is the test's.

The test is skipped only where neither way works (no util-linux; a container that grants no
CAP_SYS_ADMIN and blocks user namespaces), with a reason that says what is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# Set in the child pytest, which runs inside the namespace: there mounting is allowed.
NAMESPACE_FLAG = "LMTRAIN_MOUNT_NAMESPACE"
UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]

# The tests (node ids) whose tmpfs only a namespace can mount, each with a scratch folder of its
# own for the child; filled while a test is set up, emptied as it is torn down.
_namespace_requests: dict[str, Path] = {}


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `mount_point` with `options` (`ro`, `size=1m`), unmounted after. Where
    this process may not mount but a user + mount namespace can, the folder yields unmounted and
    the test runs in a namespace instead (call this from a fixture: the choice is made before
    the test body runs)."""
    mount_point.mkdir(exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command: the tmpfs tests need util-linux's mount")
    command = [mount, "-t", "tmpfs", "-o", options, "tmpfs", str(mount_point)]
    direct = subprocess.run(command, capture_output=True, text=True)
    if direct.returncode == 0:
        try:
            yield mount_point
        finally:
            subprocess.run(["umount", str(mount_point)], check=True)
        return
    refused = first_line(direct.stderr)
    if os.environ.get(NAMESPACE_FLAG) == "1":  # the namespace was tried: it must mount here
        pytest.fail(f"cannot mount a tmpfs inside the user+mount namespace: {refused}")
    namespace = namespace_refusal(command)
    if namespace is not None:
        pytest.skip(
            "cannot mount a tmpfs here: needs root with CAP_SYS_ADMIN, or user namespaces "
            f"(unshare --user --map-root-user --mount); mount said: {refused}; "
            f"unshare said: {namespace}"
        )
    nodeid, _, phase = os.environ.get("PYTEST_CURRENT_TEST", "").rpartition(" ")
    if phase != "(setup)":
        pytest.fail("mounted_tmpfs needs root here, or a fixture: only a test's setup can move it")
    scratch = tempfile.mkdtemp(prefix="namespace-", dir=mount_point.parent)
    _namespace_requests[nodeid] = Path(scratch)
    try:
        yield mount_point
    finally:
        _namespace_requests.pop(nodeid, None)


def namespace_refusal(mount_command: list[str]) -> str | None:
    """None where `mount_command` succeeds in a fresh user + mount namespace (the mount ends
    with the namespace, at once), else what unshare or mount said."""
    unshare = shutil.which(UNSHARE[0])
    if unshare is None:
        return "no unshare command (util-linux)"
    done = subprocess.run([unshare, *UNSHARE[1:], *mount_command], capture_output=True, text=True)
    return None if done.returncode == 0 else first_line(done.stderr) or f"exit {done.returncode}"


def first_line(text: str) -> str:
    """The first non-empty line of a command's output (mount adds a hint about dmesg)."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def namespace_request(nodeid: str) -> Path | None:
    """The scratch folder for running test `nodeid` in a namespace, if its setup asked for it."""
    return _namespace_requests.get(nodeid)


def run_in_namespace(nodeid: str, rootdir: Path, scratch: Path, env: Mapping[str, str]) -> None:
    """Run test `nodeid` alone in a child pytest inside a user + mount namespace, from `rootdir`,
    and end like it: return where it passed, else skip or fail with its reason or output."""
    command = [
        *UNSHARE,
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rs",
        f"--basetemp={scratch / 'basetemp'}",
        nodeid,
    ]
    child_env = {k: v for k, v in env.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CUR"))}
    done = subprocess.run(
        command,
        cwd=rootdir,
        env={**child_env, NAMESPACE_FLAG: "1"},
        capture_output=True,
        text=True,
    )
    output = done.stdout + done.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    if done.returncode == 0 and re.search(r"\b1 passed\b", summary):
        return
    skipped = re.search(r"^SKIPPED \[\d+\] [^\n]*?:\d+: (.*)$", output, re.MULTILINE)
    if done.returncode == 0 and skipped and re.search(r"\b1 skipped\b", summary):
        pytest.skip(f"in a user+mount namespace: {skipped.group(1)}")
    pytest.fail(
        f"in a user+mount namespace ({' '.join(command)}), the test ended with exit code "
        f"{done.returncode}:\n{output[-6000:]}",
        pytrace=False,
    )
