"""scripts/bench_data.py: its --help, and the benchmark corpus it builds."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_data.py"


def test_help_names_the_sizes_and_the_output() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    assert "--sizes-mb" in result.stdout and "--hf-map-sizes-mb" in result.stdout
    assert "latest.json" in result.stdout


def test_the_corpus_has_the_asked_size_and_never_repeats_a_file(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_data", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    folder = bench.build_corpus(tmp_path / "c", 1)
    files = sorted(p for p in folder.rglob("*.txt"))
    size = sum(p.stat().st_size for p in files)
    assert 1_000_000 <= size < 1_000_000 + 500_000 and (folder / ".complete").is_file()
    assert len({p.read_bytes() for p in files}) > 0.95 * len(files)
    assert bench.build_corpus(tmp_path / "c", 1) == folder
