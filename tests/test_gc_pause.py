"""Entry points import their libraries with the garbage collector paused, freeze what the imports
made, and end inside `gc_pause.without_final_gc`: no full collection runs during the imports, the
collector runs again after them, exit codes and atexit work are unchanged, and the objects alive
at the end are frozen, so the interpreter's shutdown does not walk them. Run in child processes:
a frozen pytest worker would keep its garbage for the whole session."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

ENTRY_POINTS = ["train", "eval", "generate", "export", "report", "strategies/__main__"]

EXITING_CHILD = """
import atexit, gc, sys
from pathlib import Path
from lmtrain.utils import gc_pause

gc_pause.resume()

def report() -> None:  # atexit still runs, after the freeze
    Path(sys.argv[1]).write_text(str(gc.get_freeze_count()))

atexit.register(report)
alive = [[] for _ in range(1000)]  # tracked by gc
with gc_pause.without_final_gc():
    {end}
"""

IMPORTING_CHILD = """
import gc, json, sys
full_passes = []
def count(phase, info):
    full_passes.append(phase == "start" and info["generation"] == 2)
gc.callbacks.append(count)
import lmtrain.train, lmtrain.eval, lmtrain.generate, lmtrain.export, lmtrain.report
import lmtrain.strategies.__main__
during_imports = sum(full_passes)
gc.collect()
print(json.dumps({
    "full_passes_during_imports": during_imports,
    "enabled": gc.isenabled(),
    "frozen": gc.get_freeze_count(),
    "collected_after": sum(full_passes) - during_imports,
}))
"""


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("end", "code"),
    [("pass", 0), ("raise SystemExit(3)", 3), ("raise ValueError('boom')", 1)],
)
def test_exit_code_and_atexit_are_kept_and_survivors_frozen(
    tmp_path: Path, end: str, code: int
) -> None:
    report = tmp_path / "frozen"
    child = run_child(EXITING_CHILD.replace("{end}", end), str(report))
    assert child.returncode == code, child.stderr
    assert ("ValueError: boom" in child.stderr) == (code == 1)  # the traceback still prints
    assert int(report.read_text()) >= 1000  # the survivors were frozen before shutdown


def test_entry_points_import_without_full_collections_and_collect_after() -> None:
    child = run_child(IMPORTING_CHILD)
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    assert seen["full_passes_during_imports"] == 0
    assert seen["enabled"] and seen["collected_after"] == 1
    assert seen["frozen"] > 100_000  # torch, Lightning, transformers: skipped by later passes


def test_a_later_entry_points_import_leaves_earlier_garbage_collectable() -> None:
    """A notebook's `import lmtrain.eval` after a `train()` froze every object alive then (its
    `resume()` froze again): the finished run's model and data stayed for the kernel's life."""
    child = run_child(
        "import gc, json, weakref\n"
        "import lmtrain.train\n"
        "class Run: pass\n"
        "run = Run(); run.itself = run; alive = weakref.ref(run); del run  # garbage, in a cycle\n"
        "frozen = gc.get_freeze_count()\n"
        "import lmtrain.eval, lmtrain.generate, lmtrain.export\n"
        "gc.collect()\n"
        "print(json.dumps([alive() is None, gc.get_freeze_count() == frozen, gc.isenabled()]))\n"
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.strip().splitlines()[-1]) == [True, True, True]


def test_an_entry_points_import_after_a_plain_trainers_run_leaves_its_garbage_collectable() -> None:
    """docs/python.md's order: a plain Trainer's run (lmtrain.models, torch) first, then
    `import lmtrain.train`. Its freeze kept the first run's model, garbage in a cycle not yet
    collected, for the kernel's life (red team rev_api)."""
    child = run_child(
        "import gc, json, weakref\n"
        "import torch\n"
        "class Run: pass\n"
        "run = Run(); run.itself = run; run.weights = torch.zeros(1000)\n"
        "alive = weakref.ref(run); del run  # garbage, in a cycle\n"
        "import lmtrain.train\n"
        "gc.collect()\n"
        "print(json.dumps([alive() is None, gc.get_freeze_count(), gc.isenabled()]))\n"
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.strip().splitlines()[-1]) == [True, 0, True]


@pytest.mark.parametrize("stop", ["KeyboardInterrupt", "ImportError('no hydra here')"])
def test_an_interrupted_or_failed_import_leaves_the_collector_on(stop: str) -> None:
    """A notebook's Ctrl-C during `import lmtrain.train` (or a library that fails to import)
    left the collector paused for the kernel's life: garbage in cycles was never freed."""
    child = run_child(
        "import gc, json, sys\n"
        "class Stop:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == 'hydra': raise {stop}\n"
        "sys.meta_path.insert(0, Stop())\n"
        "try:\n"
        "    import lmtrain.train\n"
        "except BaseException as err:\n"
        "    stopped = type(err).__name__\n"
        "print(json.dumps([stopped, gc.isenabled()]))\n"
    )
    assert child.returncode == 0, child.stderr
    assert json.loads(child.stdout.strip().splitlines()[-1]) == [stop.split("(")[0], True]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_pauses_gc_around_its_imports_and_its_exit(entry: str) -> None:
    """A new entry point that forgets it pays about 1 s at startup and 1.2-1.7 s at exit."""
    body = ast.parse((ROOT / "src" / "lmtrain" / f"{entry}.py").read_text()).body
    statements = [ast.unparse(node) for node in body]
    first_import = next(i for i, node in enumerate(body) if isinstance(node, ast.ImportFrom))
    assert statements[first_import] == "from __future__ import annotations"
    # The rank variables are checked before the libraries' imports parse them (import_env);
    # lmtrain.strategies checks them in its package's __init__, which runs before its __main__.
    checks = entry != "strategies/__main__"
    imported = "from lmtrain.utils import gc_pause" + (", import_env" if checks else "")
    assert statements[first_import + 1] == imported
    if checks:
        assert statements[first_import + 2] == "import_env.exit_on_unreadable_rank()"
    paused = body[first_import + 2 + checks]
    assert isinstance(paused, ast.With)
    assert ast.unparse(paused.items[0]) == "gc_pause.paused_for_imports()"
    assert all(isinstance(node, ast.Import | ast.ImportFrom) for node in paused.body)
    later = body[first_import + 3 + checks :]
    assert not any(isinstance(node, ast.Import | ast.ImportFrom) for node in later)
    main_blocks = [
        node for node in body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    ]
    assert len(main_blocks) == 1
    # With interrupt_is_one_line beside it: a Ctrl-C outside the task is one line.
    main_with = "with gc_pause.without_final_gc(), interrupt_is_one_line():"
    assert ast.unparse(main_blocks[0].body[0]).startswith(main_with)
