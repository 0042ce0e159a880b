"""The benchmark scripts' --out: checked before anything is measured, written after, and never
lost to a failed write.

`check_out` tries the folder with a real file, not `os.access`: root is told that /sys is
writable, and a read-only bind mount or an ACL can answer otherwise too. `write_report` prints
the report to stdout when the write fails (a full disk, a folder gone), so that a finished
benchmark's measurements survive in the terminal or the log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmtrain.utils.io import write_json


def check_out(out: Path) -> None:
    """Before measuring, exit with one `error:` line unless results can be merged into `out`:
    its folder exists or can be created, and takes a new file; a file already there (what other
    benchmarks wrote) holds a JSON object."""
    if out.is_dir():
        sys.exit(f"error: --out {out} is a folder: pass a .json file's path")
    folder = next(p for p in (out.absolute().parent, *out.absolute().parents) if p.exists())
    if not folder.is_dir():
        sys.exit(f"error: --out {out}: {folder} is not a folder: pass a path in a writable folder")
    refused = refusal(folder)
    if refused is not None:
        sys.exit(
            f"error: --out {out}: {folder} is not writable ({refused}): "
            "pass a path in a writable folder"
        )
    if out.exists():
        try:
            report = json.loads(out.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            sys.exit(f"error: --out {out} is not JSON ({err}): pass another path, or move it away")
        if not isinstance(report, dict):
            kind = type(report).__name__
            sys.exit(f"error: --out {out} holds a JSON {kind}, not an object: pass another path")


def refusal(folder: Path) -> str | None:
    """Why no file can be created in `folder`, or None: one was, and was removed at once (the
    results are written beside `out` and renamed over it, so the folder is what must take one)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".bench-out-probe-", dir=folder)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def write_report(out: Path, report: dict[str, Any]) -> None:
    """Write `report` to `out`; where that fails, print it to stdout as JSON (the last thing there:
    the model summary and W&B's lines come before it) and exit with one `error:` line naming
    `out` and the reason."""
    try:
        write_json(out, report)
    except OSError as err:
        print(json.dumps(report, indent=2, sort_keys=True), flush=True)
        sys.exit(
            f"error: --out {out}: the results could not be written ({err.strerror or err}): "
            "they are the JSON printed last on stdout: save them from there"
        )
