"""The package's arrows point down: entry points -> callbacks, strategies -> models -> data, utils
-> errors. A module importing from a layer above its own fails here, naming the import."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lmtrain"
ENTRY_POINTS = {"train", "eval", "generate", "export", "report"}
# Higher numbers may import lower ones (and their own layer), never higher ones.
LAYERS = {
    "errors": 0,
    "utils": 1,
    "lightning_compat": 1,
    "data": 1,
    "models": 2,
    "callbacks": 3,
    "strategies": 3,
    "benchmarks": 3,  # lm-eval on a loaded model: above models, below the entry points
    **dict.fromkeys(ENTRY_POINTS, 4),
}


def layer_of(module: str) -> int:
    """The layer of `lmtrain.<top>...`: by its first name below the package."""
    top = module.split(".")[1] if module.count(".") else module
    return LAYERS[top]


def lmtrain_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmtrain"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("lmtrain.")]
    return found


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(relative.parts).removesuffix(".__init__")
        if module == "lmtrain":
            continue
        own = layer_of(module)
        upward += [f"{module} -> {imp}" for imp in lmtrain_imports(path) if layer_of(imp) > own]
    assert not upward, upward


def test_every_module_has_a_layer() -> None:
    tops = {p.stem if p.is_file() else p.name for p in SRC.iterdir() if p.name != "__init__.py"}
    tops -= {"__pycache__", "__main__", "configs"}  # configs: a link to the YAML files, no code
    assert tops <= set(LAYERS), sorted(tops - set(LAYERS))
