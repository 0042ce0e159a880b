"""`resume=<run folder>` of a run whose checkpoints went to a dirpath outside its folder says
where it looked and why it took no checkpoint there, and the command it names resumes.

Red team (path31, finding 2): a relative `callbacks.model_checkpoint.dirpath` resumed from
another working directory, and a run folder moved away from its absolute dirpath, both got
"has no checkpoint in checkpoints/ to resume from", which was wrong: the checkpoints were
there, and the line named neither the folder looked in nor the launch folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from lmtrain.utils.safe_load import saved_step
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import command_environment, run_cli, tiny_cli

KEY = "callbacks.model_checkpoint.dirpath"


def train_in(cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    """`python -m lmtrain.train` run from `cwd`, where a relative dirpath means that folder."""
    return subprocess.run(
        [sys.executable, "-m", "lmtrain.train", *overrides],
        cwd=cwd,
        env=command_environment(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_relative_dirpath_resumed_from_another_folder_names_the_launch_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    launch, other = tmp_path / "launch", tmp_path / "launch" / "sub"
    other.mkdir(parents=True)
    run = tmp_path / "runs" / "rel"
    first = train_in(launch, *tiny_cli(tmp_path, data_dir, f"{KEY}=ckrel", f"hydra.run.dir={run}"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert saved_step(launch / "ckrel" / "last.ckpt") == 4

    refused = train_in(other, f"resume={run}", "trainer.max_steps=6")
    saved = f"has no checkpoint in checkpoints/: it saved them to {KEY}='ckrel'"
    assert_one_line_error(refused, saved, f"launched from, {launch}", str(other))
    assert not (other / "ckrel").exists()
    assert saved_step(launch / "ckrel" / "last.ckpt") == 4

    resumed = train_in(launch, f"resume={run}", "trainer.max_steps=6")  # as the line says
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert saved_step(launch / "ckrel" / "last.ckpt") == 6


def test_moved_run_with_outside_dirpath_says_whose_checkpoint_it_found(
    tmp_path: Path, data_dir: Path
) -> None:
    scratch, first, moved = tmp_path / "scratch", tmp_path / "a" / "run", tmp_path / "b" / "run"
    cli = tiny_cli(tmp_path, data_dir, f"{KEY}={scratch}", f"hydra.run.dir={first}")
    out = run_cli("train", *cli)
    assert out.returncode == 0, out.stderr[-3000:]
    moved.parent.mkdir()
    shutil.move(first, moved)

    refused = run_cli("train", f"resume={moved}", "trainer.max_steps=6")
    found = f"{scratch / 'last.ckpt'} there was saved by the run in {first}"
    line = assert_one_line_error(refused, f"{KEY}={scratch}", found)
    assert f"move this folder back to {first}" in line
    assert saved_step(scratch / "last.ckpt") == 4  # not taken

    shutil.copytree(moved, first, symlinks=True)  # a copy of the run: the checkpoint's owner
    refused = run_cli("train", f"resume={moved}", "trainer.max_steps=6")
    assert_one_line_error(refused, f"is the run's in {first}, not this folder's")
    shutil.rmtree(first)

    shutil.move(moved, first)  # as the line says
    resumed = run_cli("train", f"resume={first}", "trainer.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert saved_step(scratch / "last.ckpt") == 6
