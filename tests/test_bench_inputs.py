"""What the benchmark scripts and `make clean-logs` do with bad input, and what they leave."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lmtrain.models.module import CausalLMModule
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.corpora import write_play
from tests.helpers.scripts import SCRIPTS, load_script, run_script
from tests.helpers.tmpfs import mounted_tmpfs
from tests.test_bench_scripts import SMALL, assert_usage_error, make, small_args


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
        # Lightning stopped at the epoch or the time, the raw loop ran on: not the same work.
        ("trainer.max_epochs=1", "Lightning would stop there"),
        ("+trainer.max_time=00:00:01:00", "Lightning would stop there"),
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
    result = run_script("bench", *args, f"--out={out}", f"--data={play}", override, cwd=tmp_path)
    assert_one_line_error(result, "error: ", override.split("=")[0].lstrip("+"), fragment)
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
    result = run_script(
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
    result = run_script("trainer_recipe", f"--data={tmp_path / 'input.txt'}", cwd=tmp_path)
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
    stubs = tmp_path / "bin"  # an nvidia-smi that lists a GPU: without one the script refuses
    stubs.mkdir()
    (stubs / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n")
    (stubs / "nvidia-smi").chmod(0o755)
    out = tmp_path / "out"
    path = f"{stubs}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "OUT": str(out), "GPU_CHECK_RUNS": str(tmp_path / "runs")}
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


def test_bench_sides_train_on_the_same_windows_past_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The raw loop stopped with StopIteration at the end of the first epoch (1307 batches of
    Tiny Shakespeare), after the Lightning side had run: everything measured was lost. It now
    reads epoch after epoch as the trainer does, each epoch new windows of the one stream."""
    bench = load_script("bench")
    play = write_play(tmp_path / "play.txt", speeches=30)  # 2 batches of 12 x 64 an epoch
    bench.read_corpus_from(play)
    quiet = ["trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null"]
    extra = [f"paths.data_dir={tmp_path / 'data'}", "logger=csv", *quiet]
    cfg = bench.compose_config("shakespeare_char", 7, tmp_path / "run", extra)
    bench.prepare_corpus(cfg, play)
    read: list[torch.Tensor] = []
    forward = CausalLMModule.forward

    def recorded(self: CausalLMModule, input_ids: torch.Tensor) -> torch.Tensor:
        if self.training:  # not the samples' generation
            read.append(input_ids.detach().cpu().clone())
        return forward(self, input_ids)

    monkeypatch.setattr(CausalLMModule, "forward", recorded)
    sides = {}
    for side, run in (("lightning", bench.run_lightning), ("raw", bench.run_raw)):
        read.clear()
        assert run(cfg, 1) > 0
        sides[side] = list(read)
    assert len(sides["lightning"]) == len(sides["raw"]) == 7  # 3.5 epochs
    for step, (lightning, raw) in enumerate(zip(sides["lightning"], sides["raw"], strict=True)):
        assert torch.equal(lightning, raw), step
    assert not torch.equal(sides["raw"][0], sides["raw"][2])  # epoch 2 did not replay epoch 1


def test_every_benchmark_probes_the_out_folder_with_a_file_before_measuring(
    tmp_path: Path,
) -> None:
    """Root is told by os.access that /sys is writable: every benchmark measured, then lost it
    all in a PermissionError traceback at the write. A real file is tried first now."""
    play = write_play(tmp_path / "play.txt")
    out = Path("/sys/latest.json")
    for name in SMALL:
        result = run_script(name, *small_args(name, out, play, tmp_path), cwd=tmp_path)
        assert_one_line_error(result, f"--out {out}: /sys is not writable (", "writable folder")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["play.txt"], name  # nothing run
    assert not out.exists()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs with no space left: a new empty file fits, no byte more."""
    with mounted_tmpfs(tmp_path / "full", "size=64k") as folder:
        with contextlib.suppress(OSError):
            (folder / "filler").write_bytes(bytes(1 << 20))
        yield folder


@pytest.mark.parametrize("name", ["bench", "bench_switches"])
def test_a_failed_write_of_out_prints_the_results_and_one_error_line(
    name: str, tmp_path: Path, full_disk: Path
) -> None:
    """The disk filled up while the benchmark ran: a traceback at the write, and the finished
    measurements gone. They are now printed to stdout as the JSON the file would have held."""
    play = write_play(tmp_path / "play.txt")
    out = full_disk / "latest.json"
    result = run_script(name, *SMALL[name], f"--out={out}", f"--data={play}", cwd=tmp_path)
    assert_one_line_error(
        result, f"error: --out {out}: the results could not be written (No space left on device)"
    )
    lines = result.stdout.splitlines()  # the JSON comes last, after the model summary
    report = json.loads("\n".join(lines[max(i for i, line in enumerate(lines) if line == "{") :]))
    measured = report["overhead"]["shakespeare_char"] if name == "bench" else report["switches"]
    runs = measured["runs"] if name == "bench" else measured["tanh_gelu"]["runs"]
    assert all(tokens_per_s > 0 for side in runs.values() for tokens_per_s in side), runs
    assert sorted(p.name for p in full_disk.iterdir()) == ["filler"]  # no temporary file left


def test_every_benchmark_with_an_out_writes_it_through_write_report() -> None:
    """write_json straight from a script is the traceback above, with the results lost."""
    for path in sorted(SCRIPTS.glob("bench*.py")):
        text = path.read_text()
        if '"--out"' in text:
            assert "write_report(" in text and "write_json(" not in text, path.name
