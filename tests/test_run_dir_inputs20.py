"""A run folder Hydra would make where the command does not mean it is refused, in one line,
before Hydra makes it (lmtrain.utils.run_dir_checks).

`hydra.run.dir='~/run'`: Hydra does not expand `~` and wrote `./~/run`, while eval, generate and
export checked `$HOME/run`: generate and eval replaced a training run's `.hydra/` (and `resume=`
of it was then refused). An empty PROJECT_ROOT (or `paths.log_dir=''`) put the run folder at the
file system's root, refused only inside the task, after Hydra had made `/logs/<task>/runs/...`.
`resume='~/run'`, a value lmtrain reads itself, still expands `~`.

The `~` commands run with their working directory in tmp_path, where `./~/...` would go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli

TILDE_REFUSAL = "starts with ~, which Hydra does not expand"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny CLI training run in `<tmp>/~/run`: where `hydra.run.dir='~/run'` typed in <tmp>
    put it (Hydra's literal `~`)."""
    tmp = tmp_path_factory.mktemp("tilde")
    run = tmp / "~" / "run"
    overrides = tiny_cli(tmp, data_dir, f"hydra.run.dir='{run}'", "logger=csv")
    result = run_cli("train", *overrides, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run


def run_in(cwd: Path, module: str, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`python -m lmtrain.<module> ...` with `cwd` as its working directory (run_cli's is the
    checkout, where a literal `./~/` would be left)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "-m", f"lmtrain.{module}", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def without_log_dir(overrides: list[str]) -> list[str]:
    """`overrides` without its `paths.log_dir=`, for a command that sets its own."""
    return [o for o in overrides if not o.startswith("paths.log_dir=")]


def test_tools_refuse_a_tilde_run_dir_and_leave_the_training_run_alone(trained: Path) -> None:
    cwd = trained.parent.parent  # ./~/run here is the training run
    before = tree_digest(trained, skip=(".lock",))
    ckpt = f"ckpt_path='{trained / 'checkpoints' / 'last.ckpt'}'"
    commands = {
        "generate": ["generate", ckpt, "hydra.run.dir='~/run'", "max_new_tokens=2"],
        "eval": ["eval", ckpt, "hydra.run.dir='~/run'"],
        "export": ["export", ckpt, "hydra.run.dir='~/run'", f"out_dir={cwd / 'exported'}"],
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = pool.map(lambda c: run_in(cwd, *c), commands.values())
        results = dict(zip(commands, outcomes, strict=True))
    expanded = Path("~/run").expanduser()
    for name, result in results.items():
        line = assert_one_line_error(result, "hydra.run.dir='~/run' " + TILDE_REFUSAL)
        assert "(it would write ./~/run)" in line and f"e.g. {expanded}" in line, (name, line)
    assert tree_digest(trained, skip=(".lock",)) == before  # .hydra/config.yaml byte for byte
    assert not (cwd / "exported").exists()


def test_train_refuses_a_tilde_run_or_sweep_folder_before_making_it(
    tmp_path: Path, data_dir: Path
) -> None:
    base = without_log_dir(tiny_cli(tmp_path, data_dir, "logger=csv"))
    commands = [
        ["train", *base, "hydra.run.dir='~/new'"],
        ["train", *base, "paths.log_dir='~/logs'"],  # the run folder is built from it
        ["train", "-m", *base, "paths.log_dir='~/logs'", "seed=1,2"],
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda c: run_in(tmp_path, *c), commands))
    assert_one_line_error(results[0], "hydra.run.dir='~/new' " + TILDE_REFUSAL, "./~/new")
    assert_one_line_error(results[1], "paths.log_dir='~/logs' " + TILDE_REFUSAL, "hydra.run.dir=")
    assert_one_line_error(results[2], "paths.log_dir='~/logs' " + TILDE_REFUSAL, "sweep.dir=./~")
    assert not (tmp_path / "~").exists()


def test_resume_expands_tilde_itself(trained: Path, tmp_path: Path) -> None:
    """`resume='~/run'` is lmtrain's to read: with HOME the training run's parent, it resumes
    that run (run_cli's working directory, the checkout, has no `./~/run`)."""
    home = trained.parent
    result = run_cli(
        "train", "resume='~/run'", "trainer.max_steps=6", env={"HOME": str(home)}, fresh=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resuming {trained}" in result.stdout + result.stderr
    assert (trained / ".hydra" / "previous").is_dir()  # the resumed run wrote its record


def root_entries() -> set[str]:
    return {p.name for p in Path("/").iterdir()}


@pytest.fixture
def task_name() -> Iterator[tuple[str, list[Path]]]:
    """A task name no other run has, and what a refusal made too late would have left at the
    file system's root under it (removed after the test, so a failing run leaves nothing)."""
    name = f"lmtrain_test_{uuid.uuid4().hex[:8]}"
    had_logs = Path("/logs").exists()
    made = [Path("/logs") / name, Path("/") / name]
    yield name, made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    if not had_logs and Path("/logs").is_dir() and not any(Path("/logs").iterdir()):
        Path("/logs").rmdir()


@pytest.mark.parametrize("module", ["train", "eval"])
def test_an_empty_project_root_is_refused_before_hydra_makes_a_folder(
    module: str, task_name: tuple[str, list[Path]], tmp_path: Path
) -> None:
    name, made = task_name
    before = root_entries()
    overrides = [f"task_name={name}", "logger=csv", "experiment=shakespeare_char"]
    if module == "eval":
        overrides = [f"task_name={name}", f"ckpt_path={tmp_path / 'model.ckpt'}"]
    result = run_cli(module, *overrides, env={"PROJECT_ROOT": ""}, timeout=300)
    assert_one_line_error(result, "paths.root_dir='' names no folder", "PROJECT_ROOT")
    assert not any(path.exists() for path in made)
    assert root_entries() <= before


def test_an_empty_log_dir_is_refused_before_hydra_makes_a_folder(
    task_name: tuple[str, list[Path]], data_dir: Path, tmp_path: Path
) -> None:
    name, made = task_name
    before = root_entries()
    overrides = without_log_dir(tiny_cli(tmp_path, data_dir, "logger=csv"))
    overrides += [f"task_name={name}", "paths.log_dir="]
    result = run_cli("train", *overrides, timeout=300)
    assert_one_line_error(result, "paths.log_dir='' names no folder")
    assert not any(path.exists() for path in made)
    assert root_entries() <= before
