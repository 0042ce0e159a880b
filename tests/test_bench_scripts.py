"""scripts/bench.py's overhead figures, scripts/trainer_recipe.py and scripts/bench_recipe.py."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.corpora import write_play

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, str(SCRIPTS / f"{name}.py"), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_overhead_is_the_median_of_adjacent_pairs_with_its_spread_and_ms() -> None:
    bench = load_script("bench")
    # Pair 1 ran while the machine was slow for both sides: its raw run is slow too.
    runs = {"lightning": [1000.0, 500.0, 900.0], "raw": [1000.0, 400.0, 1000.0]}
    result = bench.overhead(runs, tokens_per_step=100)
    assert result["paired_ratios"] == [1.0, 1.25, 0.9]
    assert result["overhead_ratio"] == 1.0  # the unpaired medians would give 900/1000
    assert result["overhead_ratio_spread"]["min"] == 0.9
    assert result["overhead_ratio_spread"]["max"] == 1.25
    assert result["overhead_ratio_spread"]["q1"] == pytest.approx(0.95)
    # ms/step: Lightning 100, 200, 111.1 (median 111.1); raw 100, 250, 100 (median 100).
    assert result["lightning_ms_per_step"] == pytest.approx(1000 / 9)
    assert result["overhead_ms_per_step"] == pytest.approx(1000 / 9 - 100)


def test_trainer_recipe_learns_and_reports_the_whole_val_split(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    vocab = len(set(play.read_text()))
    result = script(
        "trainer_recipe",
        *(f"--data={play}", "--steps=40", "--warmup=4", "--lr=1e-2", "--block-size=16"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    val_loss = float(result.stdout.split("val_loss=")[-1].split()[0])
    assert val_loss < math.log(vocab) - 0.5  # trained, from ln(vocab) at initialization
    # Back-to-back windows over the last 10% of the characters: each one a target once.
    n_val = len(play.read_text()) - int(len(play.read_text()) * 0.9)
    assert f"val_windows={(n_val - 1) // 16}" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["play.txt"]  # nothing saved


def test_bench_reads_tiny_shakespeare_from_data_and_refuses_a_missing_file(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "bench.json"
    common = ("--sizes=shakespeare_char", "--steps=2", "--warmup=1", "--repeats=1", f"--out={out}")
    missing = script("bench", *common, f"--data={tmp_path / 'input.txt'}", cwd=tmp_path)
    assert_one_line_error(missing, f"--data {tmp_path / 'input.txt'} is not a file")
    assert not out.exists()
    done = script(
        "bench",
        *common,
        f"--data={play}",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(out.read_text())["overhead"]["shakespeare_char"]
    assert f"data.source.path={play}" in measured["overrides"], measured["overrides"]
    assert all(v > 0 for v in measured["runs"]["lightning"] + measured["runs"]["raw"])


def test_bench_recipe_fast_needs_nanogpt(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    result = script("bench_recipe", "--recipe=fast", f"--data={play}", cwd=tmp_path)
    assert_one_line_error(result, "--recipe fast", "--nanogpt")


@pytest.mark.slow
def test_bench_recipe_times_trainer_and_lmtrain_and_merges_its_results(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    out.write_text(json.dumps({"overhead_ratio": {"shakespeare_char": 0.97}}))
    paths = f"paths.data_dir={tmp_path / 'data'} paths.log_dir={tmp_path / 'logs'}"
    result = script(
        "bench_recipe",
        *(f"--data={play}", "--steps=3", "--repeats=1", "--threads=1", f"--out={out}"),
        f"--lmtrain-args={paths} callbacks.text_samples=null",
        cwd=tmp_path,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    report = json.loads(out.read_text())
    assert report["overhead_ratio"] == {"shakespeare_char": 0.97}  # other benchmarks' kept
    record = report["recipe"]["baseline"]
    assert set(record["commands"]) == {"hf_trainer", "lmtrain"}
    assert record["fastest_other"] == "hf_trainer" and record["lmtrain_vs_fastest_other"] > 0
    for command in record["commands"].values():
        assert len(command["runs"]) == 1
        for run in command["runs"]:
            assert 0 < run["val_loss"] < 10 and run["wall_s"] > run["in_loop_s"] > 0
    lmtrain = record["commands"]["lmtrain"]
    assert [run["steps"] for run in lmtrain["runs"]] == [3.0]
    assert all(0 < run["to_first_log_s"] < run["wall_s"] for run in lmtrain["runs"])
    assert (tmp_path / "data" / "cache").is_dir()  # the token cache went where lmtrain looks
    assert "lmtrain / hf_trainer:" in result.stdout


def test_every_speed_switch_composes_on_every_size(tmp_path: Path) -> None:
    """scripts/bench_switches.py's overrides make a config for each benchmark size; Muon's
    becomes an optimizer that builds (the shakespeare_char experiment's AdamW keys removed)."""
    import hydra

    switches = load_script("bench_switches")
    for size in switches.SIZES:
        for name in switches.SWITCHES:
            overrides = switches.switch_overrides(name, size)
            cfg = switches.compose_config(size, 10, tmp_path / size / name, overrides)
            if name == "muon":
                assert set(cfg.model.optimizer) == {"_target_", "muon", "adamw"}, size
                module = hydra.utils.instantiate(cfg.model, _convert_="all")
                assert set(module.optimizer_factory.names(module.model)) == {"muon", "adamw"}


@pytest.mark.parametrize(
    "name",
    ["bench", "bench_data", "bench_model_step", "bench_recipe", "bench_switches", "trainer_recipe"],
)
def test_help_shows_the_whole_description(name: str, tmp_path: Path) -> None:
    """docs/performance.md points at each script's `--help` for what it measures and how; only
    the docstring's first paragraph was shown."""
    out = script(name, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = ast.get_docstring(ast.parse((SCRIPTS / f"{name}.py").read_text()), clean=False)
    assert doc is not None and doc.count("\n\n") >= 1
    for paragraph in doc.strip().split("\n\n"):
        assert paragraph.strip() in out.stdout
