"""`resume=` of a run whose configs came from a `hydra.searchpath` folder (red team ext29, #1, #7).

The resume recomputed the defaults list of the command with only its task overrides, so a
`hydra.searchpath=[...]` typed with `experiment=<own> resume=...` was left out: Hydra's
`Could not find 'experiment/<own>'` came out as a 40-line traceback. The search path now counts
wherever the resume composes a config, and a config it still cannot find is one `error:` line.
The refusal of a run whose own `_target_`s no project config names says that typing its
`hydra.searchpath=[...]` works too, as eval's line does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

EXPERIMENT = "own29"
LOGGER = "csv_own29"
# An experiment of the user's own: its own logger option, a task_name, and a callback whose
# `_target_` no config of the project names.
EXPERIMENT_YAML = f"""# @package _global_
defaults:
  - override /logger: {LOGGER}
task_name: {EXPERIMENT}
callbacks:
  own_timer:
    _target_: lightning.pytorch.callbacks.Timer
"""


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config folder of the user's: experiment/own29.yaml and logger/csv_own29.yaml (a copy
    of the shipped csv logger)."""
    folder = tmp_path_factory.mktemp("own_configs")
    (folder / "experiment").mkdir()
    (folder / "experiment" / f"{EXPERIMENT}.yaml").write_text(EXPERIMENT_YAML)
    (folder / "logger").mkdir()
    shutil.copy(ROOT / "configs" / "logger" / "csv.yaml", folder / "logger" / f"{LOGGER}.yaml")
    return folder


def searchpath(own: Path) -> str:
    return f"hydra.searchpath=[file://{own}]"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, own: Path) -> Path:
    """A 2-step run of `experiment=own29` from the `own` folder."""
    root = tmp_path_factory.mktemp("searchpath_run")
    run = root / "run"
    args = tiny_cli(root, data_dir, searchpath(own), f"experiment={EXPERIMENT}")
    out = run_cli("train", *args, "trainer.max_steps=2", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def step_of(run: Path) -> int:
    last = run / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def copied(trained: Path, target: Path) -> Path:
    shutil.copytree(trained, target)
    return target


def test_resume_latest_and_resume_run_with_an_experiment_of_a_searchpath_folder(
    tmp_path: Path, trained: Path, own: Path
) -> None:
    logs = tmp_path / "logs"
    run = copied(trained, logs / EXPERIMENT / "runs" / "2026-01-01_00-00-00_000000")
    typed = (searchpath(own), f"experiment={EXPERIMENT}", f"paths.log_dir={logs}")
    out = run_cli("train", *typed, "resume=latest", "trainer.max_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert step_of(run) == 3
    out = run_cli("train", *typed, f"resume={run}", "trainer.max_steps=4")
    assert out.returncode == 0, out.stderr[-3000:]
    assert step_of(run) == 4


def test_switching_from_a_searchpath_option_needs_the_searchpath_and_is_one_line_without(
    tmp_path: Path, trained: Path, own: Path
) -> None:
    run = copied(trained, tmp_path / "run")
    before = (run / ".hydra" / "config.yaml").read_bytes()
    out = run_cli("train", f"resume={run}", "logger=csv", "trainer.max_steps=3")
    assert_one_line_error(out, f"resume={run}", f"logger={LOGGER}", "hydra.searchpath=[...]")
    assert (run / ".hydra" / "config.yaml").read_bytes() == before
    out = run_cli("train", searchpath(own), f"resume={run}", "logger=csv", "trainer.max_steps=3")
    assert out.returncode == 0, out.stderr[-3000:]
    assert step_of(run) == 3


def test_refusal_of_an_own_target_names_the_searchpath(tmp_path: Path, trained: Path) -> None:
    run = copied(trained, tmp_path / "run")
    out = run_cli("train", f"resume={run}", "trainer.max_steps=3")
    assert_one_line_error(
        out,
        "callbacks.own_timer._target_=lightning.pytorch.callbacks.Timer",
        "hydra.searchpath=[...] whose configs name them",
        "++callbacks.own_timer._target_=lightning.pytorch.callbacks.Timer on the command line",
    )
