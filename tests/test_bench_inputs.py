"""What the benchmark scripts and `make clean-logs` do with bad input, and what they leave."""

from __future__ import annotations

import os
import shutil
import subprocess
from argparse import Namespace
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.corpora import write_play
from tests.test_bench_scripts import SCRIPTS, assert_usage_error, load_script, make, script


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("bogus_key=1", "Could not override 'bogus_key'"),
        ("trainer.precision=64-true", "the raw loop mirrors only 32, 32-true, bf16-mixed"),
        ("trainer.accumulate_grad_batches=2", "the raw loop steps on every batch"),
        # A traceback, a rendezvous that waited for a second node, an ignored setting (rev_diff9).
        ("trainer.max_steps=abc", "trainer.max_steps='abc' is not a whole number"),
        ("trainer.accelerator=mps", "the trainer settings were refused"),
        ("trainer.num_nodes=2", "the benchmark is one process"),
        ("global_batch_size=24", "set data.batch_size instead"),
    ],
)
def test_bench_refuses_an_override_before_any_work(
    override: str, fragment: str, tmp_path: Path
) -> None:
    """A bad key was a traceback after the corpus was tokenized; a precision or accumulation
    the raw loop does not mirror was measured against a loop that ignored it."""
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    args = ["--sizes=shakespeare_char", "--steps=2", "--warmup=1", "--repeats=1"]
    result = script("bench", *args, f"--out={out}", f"--data={play}", override, cwd=tmp_path)
    assert_one_line_error(result, "error: ", override.split("=")[0], fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["play.txt"]  # no token cache, no out


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--lmtrain-args=model.bogus=1"], ["--lmtrain-args model.bogus=1", "model.bogus"]),
        (["--lmtrain-args=trainer.max_steps=-5"], ["trainer.max_steps=-5 must be at least -1"]),
        (["--nanogpt=/nonexistent/nanoGPT"], ["--nanogpt /nonexistent/nanoGPT has no train.py"]),
    ],
)
def test_bench_recipe_refuses_bad_lmtrain_args_and_checkouts_before_any_run(
    args: list[str], fragments: list[str], tmp_path: Path
) -> None:
    """lmtrain's overrides were checked only by its own run, after the Trainer's (a whole
    2,000-step run at the defaults); a missing checkout was told to prepare its data."""
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    result = script(
        "bench_recipe",
        f"--data={play}",
        f"--out={out}",
        "--steps=1",
        "--repeats=1",
        *args,
        cwd=tmp_path,
    )
    assert_one_line_error(result, *fragments)
    assert "hf_trainer run" not in result.stderr  # nothing was timed
    assert not out.exists()


def test_trainer_recipe_refuses_a_missing_data_file(tmp_path: Path) -> None:
    result = script("trainer_recipe", f"--data={tmp_path / 'input.txt'}", cwd=tmp_path)
    assert_usage_error(result, "trainer_recipe", f"--data {tmp_path / 'input.txt'} is not a file")


def test_the_hf_map_flag_alone_measures_the_largest_size() -> None:
    """`--hf-map-sizes-mb` alone, as the docstring's example has it, turned the comparison off
    (and the stored hf_map figures were dropped from latest.json)."""
    bench_data = load_script("bench_data")
    for given, sizes in ((None, [50]), ([], [50]), ([10], [10])):
        args = Namespace(sizes_mb=[10, 50], hf_map_sizes_mb=given)
        assert bench_data.hf_map_sizes(args) == sizes, given


def test_gpu_check_exits_non_zero_and_stops_when_the_install_fails(tmp_path: Path) -> None:
    """Every step could fail and the script still exited 0 (the device tool reads rc)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "gpu_check.sh", tmp_path / "scripts")
    (tmp_path / ".whl").mkdir()  # the offline install, of no wheels: it fails
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "GPU_CHECK_RUNS": str(tmp_path / "runs")}
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    rows = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| install"]  # stopped after it
    assert "FAILED" in rows[1]


def test_make_clean_logs_keeps_results_follows_a_linked_logs_and_reads_project_root(
    tmp_path: Path,
) -> None:
    """logs/gpu_check/ (the GPU check's summary) was deleted; a logs/ that is a link to a
    scratch disk was left whole; $PROJECT_ROOT/logs, where runs go when it is set, was ignored;
    no logs/ at all failed the target."""
    scratch = tmp_path / "scratch" / "logs"
    for name in ("train/runs/1", "eval/runs/2", "bench", "gpu_check"):
        (scratch / name).mkdir(parents=True)
    (scratch / "gpu_check" / "summary.md").write_text("| install | ok | 1 |")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "logs").symlink_to(scratch)
    assert make("clean-logs", cwd=checkout).returncode == 0
    assert sorted(p.name for p in scratch.iterdir()) == ["bench", "gpu_check"]
    assert (scratch / "gpu_check" / "summary.md").is_file()

    (scratch / "train" / "runs" / "3").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PROJECT_ROOT": str(tmp_path / "scratch")}
    command = ["make", "--no-print-directory", "-f", str(SCRIPTS.parent / "Makefile"), "clean-logs"]
    result = subprocess.run(command, cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in scratch.iterdir()) == ["bench", "gpu_check"]
    assert make("clean-logs", cwd=elsewhere).returncode == 0  # no logs/ here: nothing to do
