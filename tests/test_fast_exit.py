"""Entry points end inside `without_final_gc`: the exit code and the atexit work are unchanged,
and the objects alive at the end are frozen, so the interpreter's shutdown does not walk them.
Run in child processes: a frozen pytest worker would keep its garbage for the whole session."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

ENTRY_POINTS = ["train", "eval", "generate", "export", "report", "strategies/__main__"]

CHILD = """
import atexit, gc, sys
from pathlib import Path
from lmtrain.utils.fast_exit import without_final_gc

def report() -> None:  # atexit still runs, after the freeze
    Path(sys.argv[1]).write_text(str(gc.get_freeze_count()))

atexit.register(report)
alive = [[] for _ in range(1000)]  # tracked by gc
with without_final_gc():
    {end}
"""


@pytest.mark.parametrize(
    ("end", "code"),
    [("pass", 0), ("raise SystemExit(3)", 3), ("raise ValueError('boom')", 1)],
)
def test_exit_code_and_atexit_are_kept_and_survivors_frozen(
    tmp_path: Path, end: str, code: int
) -> None:
    report = tmp_path / "frozen"
    child = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{end}", end), str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == code, child.stderr
    assert ("ValueError: boom" in child.stderr) == (code == 1)  # the traceback still prints
    assert int(report.read_text()) >= 1000  # the survivors were frozen before shutdown


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_runs_main_inside_without_final_gc(entry: str) -> None:
    """A new entry point that forgets it pays ~1.2 s at every exit (docs/performance.md)."""
    tree = ast.parse((ROOT / "src" / "lmtrain" / f"{entry}.py").read_text())
    main_blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]
    assert len(main_blocks) == 1
    assert ast.unparse(main_blocks[0].body[0]).startswith("with without_final_gc():")
