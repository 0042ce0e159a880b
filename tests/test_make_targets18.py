"""The make targets as a user runs them: `make report` without SWEEP, `make clean-logs` beside a
live run, `make bench` with a bad BENCH_ARGS, and a `.venv` that is a link left out of git."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_play
from tests.helpers.killed_runs import kill, start

MAKEFILE = ROOT / "Makefile"


def make(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make -f <checkout>/Makefile <args>` run in `cwd`, as from another folder."""
    command = ["make", "--no-print-directory", "-f", str(MAKEFILE), *args]
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def forge_sweep(sweep: Path, losses: list[float]) -> Path:
    """A finished sweep over the learning rate, job by job as lmtrain.train leaves it."""
    for num, loss in enumerate(losses):
        hydra_dir = sweep / str(num) / ".hydra"
        hydra_dir.mkdir(parents=True)
        (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump([f"model.optimizer.lr=0.{num}"]))
        (hydra_dir / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": "val/loss"}))
        (sweep / str(num) / "metrics.json").write_text(json.dumps({"val/loss": loss}))
    (sweep / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")  # as a sweep has it
    return sweep


def test_make_report_takes_the_newest_sweep_by_its_time_not_by_its_last_change(
    tmp_path: Path,
) -> None:
    """`make report SWEEP=<older>` wrote its report into the older sweep, which made it the
    newest of `ls -dt`: the next plain `make report` reported the old sweep again. The default
    is now the newest by the time its folder is named by, across tasks; a folder of another name
    (a hydra.sweep.dir of the user's) is never the default."""
    logs = tmp_path / "logs"
    older = forge_sweep(logs / "lm" / "multiruns" / "2026-03-01_09-00-00_000001", [2.0])
    newer = forge_sweep(logs / "sft" / "multiruns" / "2026-03-02_08-00-00_000000", [1.5])
    mine = forge_sweep(logs / "lm" / "multiruns" / "my_lr_sweep", [1.0])
    for folder in (older, newer, mine):
        os.utime(folder, (1_000, 1_000))
    for folder in (older, mine):  # written into after the newer one: the newest changes
        result = run_cli("report", str(folder))
        assert result.returncode == 0, result.stderr[-2000:]
        assert (folder / "report.md").is_file()

    env = {**os.environ, "PROJECT_ROOT": str(tmp_path)}
    dry = subprocess.run(  # in the checkout: what it would run, nothing installed nor run
        ["make", "--no-print-directory", "-n", "report"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dry.returncode == 0, dry.stderr
    assert f'-m lmtrain.report "{newer}/"' in dry.stdout, dry.stdout

    result = make("report", cwd=tmp_path, env={"PROJECT_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (newer / "report.md").is_file()

    # Only sweeps of folders of the user's own names: no default, one line naming SWEEP=.
    own = tmp_path / "own"
    forge_sweep(own / "logs" / "lm" / "multiruns" / "my_lr_sweep", [1.0])
    result = make("report", cwd=tmp_path, env={"PROJECT_ROOT": str(own)})
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "pass SWEEP=<folder>" in errors[0], result.stderr
    assert not (own / "logs" / "lm" / "multiruns" / "my_lr_sweep" / "report.md").exists()


@pytest.mark.slow
def test_make_clean_logs_keeps_the_folders_of_a_live_run_and_a_live_sweep(
    tmp_path: Path,
) -> None:
    """`make clean-logs` deleted the folder of a run still training, which then died with a
    traceback. The folders whose lock a live process holds (a run's, a sweep's) are now kept and
    named with the holder's pid; the finished runs beside them go; the live runs then end well.
    """
    corpus = write_play(tmp_path / "play.txt")
    logs = tmp_path / "logs"
    # Finished folders beside them (their lock files left behind, held by no one).
    finished = [
        logs / "train" / "runs" / "2026-01-01_00-00-00_000000",
        logs / "train" / "multiruns" / "2026-01-01_00-00-00_000000" / "0",
        logs / "old" / "runs" / "2026-01-02_00-00-00_000000",
    ]
    for folder in finished:
        folder.mkdir(parents=True)
        (folder / ".lock").write_text("1 elsewhere\n")
        (folder / "metrics.json").write_text("{}")
    for name in ("bench/latest.json", "gpu_check/summary.md", "mycorpus/notes.md"):
        (logs / name).parent.mkdir(parents=True)
        (logs / name).write_text("mine")
    procs = {}
    for kind in ("run", "sweep"):
        pace = [
            "+callbacks.pace._target_=tests.helpers.faults.Pace",
            f"+callbacks.pace.dirpath={tmp_path / kind}",
            "+callbacks.pace.seconds=0.5",
        ]
        tiny = ["logger=csv", "trainer.max_steps=12", *pace]
        cli = tiny_cli(tmp_path, tmp_path / kind / "data", *tiny, corpus=corpus)
        multirun = ["-m"] if kind == "sweep" else []
        command = [sys.executable, "-m", "lmtrain.train", *multirun, *cli]
        procs[kind] = start(command, tmp_path / f"{kind}.out")
    try:
        waiting = set(procs)
        while waiting:  # each stopped as soon as it has reached step 2, while make runs
            for kind in sorted(waiting):
                assert procs[kind].poll() is None, (tmp_path / f"{kind}.out").read_text()[-3000:]
                if (tmp_path / kind / "rank0.pid").exists():
                    os.killpg(procs[kind].pid, signal.SIGSTOP)
                    waiting.remove(kind)
            time.sleep(0.02)
        live_run = next(p for p in logs.glob("*/runs/*") if p not in finished)
        live_sweep = next(p for p in logs.glob("*/multiruns/*") if p != finished[1].parent)

        result = make("clean-logs", cwd=tmp_path, env={"PROJECT_ROOT": str(tmp_path)})
        assert result.returncode == 0, result.stderr
        kept = sorted(line for line in result.stdout.splitlines() if line.startswith("kept "))
        assert len(kept) == 2, result.stdout
        for line, folder, kind in zip(kept, (live_sweep, live_run), ("sweep", "run"), strict=True):
            live = f"kept {folder}: in use by a live run or sweep (pid {procs[kind].pid} on host"
            assert line.startswith(live), result.stdout
        assert not any(folder.exists() for folder in finished)
        assert not (logs / "old").exists()
        assert live_run.is_dir() and (live_sweep / "0").is_dir()
    except BaseException:
        for proc in procs.values():
            kill(proc)
        raise
    for proc in procs.values():
        os.killpg(proc.pid, signal.SIGCONT)
    for kind, proc in procs.items():
        assert proc.wait(timeout=300) == 0, (tmp_path / f"{kind}.out").read_text()[-3000:]
    assert (live_run / "metrics.json").is_file() and (live_sweep / "0" / "metrics.json").is_file()

    # Once they have ended, their folders go too; the results and the user's folder stay.
    result = make("clean-logs", cwd=tmp_path, env={"PROJECT_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in logs.iterdir()) == ["bench", "gpu_check", "mycorpus"]


def test_make_bench_refuses_a_bad_bench_args_before_any_benchmark_runs(tmp_path: Path) -> None:
    """`make bench BENCH_ARGS="--steps=-5"` ran the recipe benchmark (minutes) before bench.py
    refused the argument. bench.py now checks its arguments first (`--check-args`)."""
    play = write_play(tmp_path / "play.txt")
    args = ["bench", "BENCH_ARGS=--steps=-5", f"DATA={play}"]
    dry = make("-n", *args, cwd=ROOT)  # the order of the commands, before anything runs
    assert dry.returncode == 0, dry.stderr
    scripts = [line for line in dry.stdout.splitlines() if "scripts/bench" in line]
    assert "scripts/bench.py --check-args" in scripts[0] and "--steps=-5" in scripts[0], scripts

    result = make(*args, cwd=tmp_path)
    assert result.returncode != 0
    assert "--steps -5 leaves no timed step" in result.stderr, result.stderr[-2000:]
    assert "bench_recipe" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    out = tmp_path / "out" / "latest.json"
    bench = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--sizes=shakespeare_char"]
    check = [*bench, "--check-args", f"--data={play}"]
    good = subprocess.run(
        [*check, "--steps=20", f"--out={out}"], capture_output=True, text=True, timeout=300
    )
    assert good.returncode == 0, good.stderr[-2000:]
    assert not out.parent.exists()  # checked, nothing measured nor written


def test_gitignore_leaves_out_a_venv_that_is_a_link(tmp_path: Path) -> None:
    """`.venv/` matched only a folder: a clone whose .venv links to a shared one showed it as
    a file to add."""
    shared = tmp_path / "venvs" / "lmtrain"
    (shared / "bin").mkdir(parents=True)
    (shared / "pyvenv.cfg").write_text("home = /usr/bin\n")
    for name in ("linked", "folder"):
        clone = tmp_path / name
        clone.mkdir()
        subprocess.run(["git", "init", "-q", str(clone)], check=True)
        shutil.copy(ROOT / ".gitignore", clone / ".gitignore")
        if name == "linked":  # as the project's clones have it
            (clone / ".venv").symlink_to(shared)
        else:
            shutil.copytree(shared, clone / ".venv")
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=clone,
            capture_output=True,
            text=True,
            check=True,
        )
        assert status.stdout.splitlines() == ["?? .gitignore"], (name, status.stdout)


def test_lint_format_and_test_act_on_the_checkout_from_another_folder(tmp_path: Path) -> None:
    # `make -f <checkout>/Makefile format` from another folder reformatted that folder's files
    # (unused imports deleted); lint passed on them, not on the checkout; test collected nothing.
    planned = make("-n", "lint", "format", "test", cwd=tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    for command in ("ruff check", "ruff format --check", "ruff format", "ruff check --fix"):
        assert f'{command} "{ROOT}/."' in planned.stdout, planned.stdout
    assert f'cd "{ROOT}/." && ' in planned.stdout, planned.stdout
