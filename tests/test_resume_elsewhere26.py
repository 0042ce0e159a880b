"""`resume=` from another working directory, of a run trained on a relative corpus path, names
the launch folder whatever differs (red team clean26, #4).

`data.source.path=input.txt` means the launch folder. Resumed elsewhere, an `input.txt` with
other characters gives another char vocabulary: the model-shape check ran before the data check
and blamed an edit to `.hydra/config.yaml`, pointing at a `.hydra/previous/` no resume had made.
Now the line names the launch folder, as the data check does when the vocabulary matches
(tests/test_resume_data22.py), and an edited config's line names a copy only if one exists.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.cli import tiny_cli
from tests.helpers.corpora import write_play


def train_in(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m lmtrain.train` run from `cwd` (so a relative corpus path means `cwd`)."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "lmtrain.train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def corpus_in(folder: Path, extra: str) -> Path:
    """The same play in `folder/input.txt`, with `extra` characters added to its vocabulary."""
    play = write_play(folder / "input.txt")
    play.write_text(play.read_text() + extra)
    return play


def folder_state(run: Path) -> dict[str, str]:
    """sha256 of every file of the run folder but its log and lock (appended by any command)."""
    return {
        str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run.rglob("*"))
        if path.is_file() and path.suffix != ".log" and path.name != ".lock"
    }


def only_error(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def relative_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """A 2-step run launched from `launched` on `data.source.path=input.txt`: (launched, run)."""
    root = tmp_path_factory.mktemp("elsewhere")
    launched = root / "launched"
    corpus = corpus_in(launched, "@")
    run = root / "run"
    overrides = tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    overrides = [o for o in overrides if not o.startswith("data.source.path=")]
    out = train_in(launched, *overrides, "data.source.path=input.txt", "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    return launched, run


@pytest.mark.parametrize(
    ("extra", "differs"),
    [("@%", "another model: vocab_size="), ("%", "another tokenizer")],
    ids=["other-vocab-size", "same-size-other-ids"],
)
def test_resume_elsewhere_names_the_launch_folder(
    relative_run: tuple[Path, Path], tmp_path: Path, extra: str, differs: str
) -> None:
    launched, run = relative_run
    corpus_in(tmp_path, extra)  # input.txt here: other characters than the run's
    before = folder_state(run)
    error = only_error(train_in(tmp_path, f"resume={run}", "trainer.max_steps=4"))
    assert "data.source.path='input.txt' finds other data here" in error, error
    assert differs in error, error
    assert f"launched from {launched} and this command from {tmp_path}" in error, error
    assert f"resume from {launched}," in error, error
    assert ".hydra" not in error, error  # no edit was made; no copy exists
    assert folder_state(run) == before


def test_edited_config_names_a_copy_only_if_one_exists(relative_run: tuple[Path, Path]) -> None:
    """From the launch folder, another model in the saved config is an edit: the line names
    the file to fix, and `.hydra/previous/` only once a resume has kept a copy there."""
    launched, run = relative_run
    saved = run / ".hydra" / "config.yaml"
    original = saved.read_text()
    assert "n_embd: 32" in original
    saved.write_text(original.replace("n_embd: 32", "n_embd: 64"))
    try:
        error = only_error(train_in(launched, f"resume={run}", "trainer.max_steps=4"))
        assert "describes another model than its checkpoint" in error, error
        assert "n_embd=32 in the checkpoint but 64 here" in error, error
        assert f"in {saved} (no earlier copy is kept)" in error, error
        assert "previous" not in error and not (run / ".hydra" / "previous").exists(), error
        copy = run / ".hydra" / "previous" / "2026-01-01_00-00-00_000000"
        copy.mkdir(parents=True)
        (copy / "config.yaml").write_text(original)
        error = only_error(train_in(launched, f"resume={run}", "trainer.max_steps=4"))
        assert f"e.g. from the copy in {copy}/" in error, error
        # From another folder holding the same text, the edit is still the cause, not the
        # folder (review: the launch folder was blamed for any difference).
        elsewhere = launched.parent / "elsewhere"
        corpus_in(elsewhere, "@")
        error = only_error(train_in(elsewhere, f"resume={run}", "trainer.max_steps=4"))
        assert "describes another model than its checkpoint" in error, error
        assert "launched from" not in error, error
    finally:
        saved.write_text(original)
