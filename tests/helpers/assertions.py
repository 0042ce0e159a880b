"""What a refused command must look like: exactly one `error: ...` line, no traceback."""

from __future__ import annotations

import subprocess


def one_error_line(stderr: str) -> str:
    """The single `error: ` line of a refused command's stderr (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A non-zero exit, no traceback anywhere, one `error:` line holding every fragment; returns
    that line."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert "Traceback" not in output, output[-3000:]
    line = one_error_line(result.stderr)
    for fragment in fragments:
        assert fragment in line, line
    return line
