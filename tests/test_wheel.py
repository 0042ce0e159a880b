"""A non-editable install: the wheel carries the configs, and the entry points run from it
anywhere, as `pip install <checkout>` users run them.

The wheel is built from a copy of the checkout (pip writes `build/` beside the sources), holding
a user's own `configs/local/` file, which must stay out of the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.compose import TINY
from tests.helpers.corpora import one_file_corpus

# What a checkout's top folder holds beside the sources: not needed to build the wheel.
NOT_SOURCES = {".git", ".venv", "logs", "data", "build", "exports", "wandb", "outputs"}


PIP = [sys.executable, "-m", "pip"]
TEXT = {"capture_output": True, "text": True, "timeout": 600}


def not_sources(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or (Path(folder) == ROOT and n in NOT_SOURCES)}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("tree") / "lmtrain"
    shutil.copytree(ROOT, tree, symlinks=True, ignore=not_sources)
    (tree / "configs" / "local" / "mine.yaml").write_text("# @package _global_\nseed: 1\n")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(tree)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("lmtrain-*.whl")
    return built


def test_the_wheel_holds_every_config_but_a_users_local_ones(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        n.removeprefix("lmtrain/configs/") for n in names if n.startswith("lmtrain/configs/")
    }
    in_checkout = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert {"train.yaml", "eval.yaml", "model/gpt2_tiny.yaml"} <= shipped
    assert shipped == {n for n in in_checkout if not n.startswith("local/")}
    assert "local/mine.yaml" not in shipped


def test_an_installed_wheel_trains_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", "--no-deps", "-q", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # The wheel's package comes first on the path, before the checkout's editable install.
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    run = [sys.executable, "-m", "lmtrain.train", *TINY, "data=text_files"]
    run += ["data.tokenizer.kind=char", f"data.source.path={one_file_corpus(tmp_path / 'c')}"]
    run += ["logger=csv", "trainer.max_steps=2", "callbacks.text_samples=null"]
    done = subprocess.run(run, cwd=elsewhere, env=env, **TEXT)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (elsewhere / "logs" / "train" / "runs").iterdir()  # the working directory's logs
    config = (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert str(site / "lmtrain" / "configs") in config  # composed from the installed configs
    assert json.loads((run_dir / "metrics.json").read_text())["trainer/global_step"] == 2
    assert not (site / "lmtrain" / "logs").exists() and not (site / "logs").exists()
    for tool in ("eval", "generate", "export"):  # each composes its own config from the wheel
        shown = subprocess.run(
            [sys.executable, "-m", f"lmtrain.{tool}", "--help"], cwd=elsewhere, env=env, **TEXT
        )
        assert shown.returncode == 0 and "== Config ==" in shown.stdout, shown.stderr[-3000:]
