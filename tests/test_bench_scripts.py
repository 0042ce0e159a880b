"""scripts/bench.py's overhead figures, scripts/trainer_recipe.py and scripts/bench_recipe.py."""

from __future__ import annotations

import ast
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.corpora import write_play
from tests.helpers.scripts import SCRIPTS, load_script, run_script


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
    result = run_script(
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
    missing = run_script("bench", *common, f"--data={tmp_path / 'input.txt'}", cwd=tmp_path)
    assert_one_line_error(missing, f"--data {tmp_path / 'input.txt'} is not a file")
    assert not out.exists()
    # A size measured by an earlier command keeps its own settings (they were replaced by this
    # command's, so gpt2_10m read as measured with 2 steps).
    earlier = {"steps": 30, "warmup": 6, "repeats": 3, "threads": 2, "measured_at": "earlier"}
    out.write_text(json.dumps({"overhead_settings": {"gpt2_10m": earlier}}))
    done = run_script(
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
    settings = json.loads(out.read_text())["overhead_settings"]
    assert settings["gpt2_10m"] == earlier
    assert settings["shakespeare_char"] == measured["settings"]
    assert [measured["settings"][k] for k in ("steps", "warmup", "threads")] == [2, 1, 1]
    assert measured["device"] == "cpu"
    # The machine too: one for the whole file named the last command's for every size.
    assert measured["settings"]["machine"]["cores"] == os.cpu_count()
    assert "machine" not in json.loads(out.read_text())


def test_bench_recipe_fast_needs_nanogpt(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    result = run_script("bench_recipe", "--recipe=fast", f"--data={play}", cwd=tmp_path)
    assert_one_line_error(result, "--recipe fast", "--nanogpt")


@pytest.mark.slow
def test_bench_recipe_times_trainer_and_lmtrain_and_merges_its_results(tmp_path: Path) -> None:
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    out.write_text(json.dumps({"overhead_ratio": {"shakespeare_char": 0.97}}))
    paths = f"paths.data_dir={tmp_path / 'data'} paths.log_dir={tmp_path / 'logs'}"
    result = run_script(
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
    out = run_script(name, "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = ast.get_docstring(ast.parse((SCRIPTS / f"{name}.py").read_text()), clean=False)
    assert doc is not None and doc.count("\n\n") >= 1
    for paragraph in doc.strip().split("\n\n"):
        assert paragraph.strip() in out.stdout


def assert_usage_error(result: subprocess.CompletedProcess[str], name: str, *fragments: str) -> str:
    """argparse's refusal: exit 2, no traceback, its last line `<name>.py: error: ...` holding
    every fragment; returns that line."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"{name}.py: error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in line, line
    return line


# Bad numbers and names (args, fragments of the one line): each failed only after the work.
BAD_ARGUMENTS = {
    "bench": (
        ["--warmup=0", "--steps=0", "--repeats=0", "--sizes=foo,shakespeare_char", "--threads=-1"],
        [
            "--warmup 0: pass 1",
            "--steps 0 leaves no timed step",
            "--repeats 0",
            "['foo']",
            "--threads -1",
        ],
    ),
    "bench_switches": (
        ["--switches=nope,tanh_gelu", "--repeats=0"],
        ["--switches: unknown ['nope']", "--repeats 0: pass 1"],
    ),
    "bench_recipe": (
        ["--steps=0", "--repeats=0", "--threads=0"],
        ["--steps 0: pass 1", "--repeats 0: pass 1", "--threads 0: pass 1"],
    ),
    "bench_data": (
        ["--sizes-mb", "0", "5", "--repeats=0", "--workers=-1", "--hf-map-sizes-mb", "5", "7"],
        ["--sizes-mb 0 5", "--repeats 0", "--workers -1: pass 1", "--hf-map-sizes-mb 7: not in"],
    ),
    "bench_model_step": (
        ["--steps=0", "--threads=0", "--vocab=0"],
        ["--steps 0: pass 1", "--threads 0: pass 1", "--vocab 0: pass 1"],
    ),
}


@pytest.mark.parametrize("name", list(BAD_ARGUMENTS))
def test_bad_numbers_and_names_are_refused_together_before_any_work(
    name: str, tmp_path: Path
) -> None:
    args, fragments = BAD_ARGUMENTS[name]
    out = tmp_path / "latest.json"
    outs = [] if name == "bench_model_step" else [f"--out={out}"]
    corpus = [f"--corpus-dir={tmp_path / 'corpora'}"] if name == "bench_data" else []
    result = run_script(name, *args, *outs, *corpus, cwd=tmp_path)
    assert_usage_error(result, name, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, nothing built


def test_check_out_refuses_an_out_that_results_could_not_be_merged_into(tmp_path: Path) -> None:
    """--out's folder must exist or be creatable and writable, and a file there must hold a JSON
    object (the other benchmarks' results, merged into)."""
    bench = load_script("bench")
    bench.check_out(tmp_path / "new" / "deeper" / "latest.json")  # created when written
    (tmp_path / "report.json").write_text('{"overhead_ratio": {}}')
    bench.check_out(tmp_path / "report.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "broken.json").write_text("{oops")
    (tmp_path / "file").write_text("")
    refused = {
        tmp_path: "is a folder",
        tmp_path / "file" / "latest.json": f"{tmp_path / 'file'} is not a folder",
        Path("/dev/null/latest.json"): "/dev/null is not a folder",
        tmp_path / "list.json": "holds a JSON list, not an object",
        tmp_path / "broken.json": "is not JSON (Expecting property name",
    }
    for out, fragment in refused.items():
        with pytest.raises(SystemExit) as refusal:
            bench.check_out(out)
        assert str(refusal.value.code).startswith(f"error: --out {out}"), refusal.value.code
        assert fragment in str(refusal.value.code)


SMALL = {  # enough for the old scripts to finish in seconds, measuring before they wrote --out
    "bench": ["--sizes=shakespeare_char", "--steps=2", "--warmup=1", "--repeats=1"],
    "bench_switches": ["--switches=tanh_gelu", "--steps=2", "--warmup=1", "--repeats=1"],
    "bench_recipe": ["--steps=1", "--repeats=1"],
    "bench_data": ["--sizes-mb=1", "--repeats=1", "--sample-mb=0.2", "--vocab-size=300"],
}


def small_args(name: str, out: Path, play: Path, tmp_path: Path) -> list[str]:
    """`SMALL[name]` writing `out`, on `play` (bench_data: its own corpora), caches in tmp_path."""
    args = [*SMALL[name], f"--out={out}"]
    if name == "bench_data":
        args.append(f"--corpus-dir={tmp_path / 'corpora'}")
    else:
        args.append(f"--data={play}")
    if name == "bench_recipe":
        args.append(f"--lmtrain-args=paths.data_dir={tmp_path / 'data'}")
    return args


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bench", None, "/dev/null is not a folder"),
        ("bench_switches", "{oops", "is not JSON"),
        ("bench_recipe", "[1]", "holds a JSON list, not an object"),
        ("bench_data", "folder", "is a folder"),
    ],
)
def test_every_benchmark_refuses_a_bad_out_before_measuring(
    name: str, content: str | None, fragment: str, tmp_path: Path
) -> None:
    play = write_play(tmp_path / "play.txt")
    out = Path("/dev/null/latest.json") if content is None else tmp_path / "latest.json"
    if content == "folder":
        out.mkdir()
    elif content is not None:
        out.write_text(content)
    result = run_script(name, *small_args(name, out, play, tmp_path), cwd=tmp_path)
    assert_one_line_error(result, f"--out {out}", fragment)
    written = ["play.txt"] if content is None else ["latest.json", "play.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == written  # no token cache, no corpus
    if content not in (None, "folder"):
        assert out.read_text() == content  # left as it was


@pytest.mark.parametrize(
    ("name", "kind"), [("bench", "empty"), ("bench_switches", "binary"), ("bench_recipe", "short")]
)
def test_a_bad_data_file_is_one_error_line_naming_it(name: str, kind: str, tmp_path: Path) -> None:
    """An empty, binary or too short --data: lmtrain's refusal, as one line naming --data,
    before any run (bench_switches reads --data too, as `make bench DATA=...` passes it)."""
    data = tmp_path / "input.txt"
    data.write_bytes({"empty": b"", "binary": bytes(range(256)) * 8, "short": b"To be.\n"}[kind])
    out = tmp_path / "latest.json"
    args = [f"--data={data}", f"--out={out}", "--repeats=1"]
    if name == "bench_recipe":
        args += ["--steps=1", f"--lmtrain-args=paths.data_dir={tmp_path / 'data'}"]
    else:
        args += ["--steps=2", "--warmup=1"]
        args += ["--sizes=shakespeare_char"] if name == "bench" else ["--switches=tanh_gelu"]
    result = run_script(name, *args, cwd=tmp_path)
    reason = {"empty": "only empty files", "binary": "not UTF-8", "short": "too few for a"}[kind]
    assert_one_line_error(result, f"error: --data {data}: ", reason)
    assert not out.exists()


def make(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = ["make", "--no-print-directory", "-f", str(SCRIPTS.parent / "Makefile"), *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_make_bench_passes_data_to_every_tiny_shakespeare_script_and_quotes_paths() -> None:
    """`make bench DATA=...` ran bench_switches.py without --data, which then downloaded (or
    failed offline); NANOGPT was passed unquoted."""
    data, nanogpt = "/corpora/tiny shakespeare/input.txt", "/src/nano gpt"
    result = make("-n", "bench", f"DATA={data}", f"NANOGPT={nanogpt}", cwd=SCRIPTS.parent)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "scripts/bench" in line]
    for name in ("bench_recipe.py", "bench_recipe.py --recipe fast", "bench.py", "bench_switches"):
        line = next(line for line in lines if f"scripts/{name}" in line)
        assert f'--data "{data}"' in line, line
    recipes = [line for line in lines if "scripts/bench_recipe.py" in line]
    assert len(recipes) == 2 and all(f'--nanogpt "{nanogpt}"' in line for line in recipes)


def test_make_clean_logs_deletes_run_folders_only(tmp_path: Path) -> None:
    """It deleted logs/bench/latest.json (the benchmarks' results) and loose files too."""
    for path in ("train/runs/1/metrics.json", "eval/multiruns/2/x", "bench/latest.json"):
        (tmp_path / "logs" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "logs" / path).write_text("{}")
    (tmp_path / "logs" / ".gitkeep").write_text("")
    (tmp_path / "logs" / "notes.txt").write_text("mine")
    # Red team: a folder of the user's own under logs/ went with the run folders.
    (tmp_path / "logs" / "mycorpus").mkdir()
    (tmp_path / "logs" / "mycorpus" / "notes.md").write_text("mine")
    (tmp_path / "logs" / "train" / "wandb-notes.txt").write_text("mine")  # beside runs/
    result = make("clean-logs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    kept = sorted(str(p.relative_to(tmp_path / "logs")) for p in (tmp_path / "logs").rglob("*"))
    assert kept == [
        ".gitkeep", "bench", "bench/latest.json", "mycorpus", "mycorpus/notes.md", "notes.txt",
        "train", "train/wandb-notes.txt",
    ]  # fmt: skip
    help_line = next(
        line
        for line in make("help", cwd=SCRIPTS.parent).stdout.splitlines()
        if "clean-logs" in line
    )
    assert "logs/bench" in help_line
