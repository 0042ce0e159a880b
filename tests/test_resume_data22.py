"""A resumed run trains on the data of the run it continues (red team rev_run22, A).

`resume=` keeps `data.source` as typed; a relative `data.source.path` resumed from another
working directory, or a corpus edited in place, found other text, built another cache and
trained on it with exit 0. The checkpoint now records a digest of what the cache served
(`SameDataOnEveryRank`'s state), and the run's own checkpoint is refused on other tokens,
before anything is written into the run folder. A checkpoint taken into a new run folder may
still train on other data, and a checkpoint without the record resumes as before.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import ROOT
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_play

STATE_KEY = "SameDataOnEveryRank"


def shuffled_copy(corpus: Path, target: Path) -> Path:
    """The same speeches (so the same characters) in another order."""
    speeches = corpus.read_text().split("\n\n")
    random.Random(1).shuffle(speeches)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n\n".join(speeches))
    return target


def folder_state(run: Path) -> dict[str, str]:
    """sha256 of every file of the run folder but its log and lock (appended by any command)."""
    return {
        str(path.relative_to(run)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(run.rglob("*"))
        if path.is_file() and path.suffix != ".log" and path.name != ".lock"
    }


def finished_run(tmp_path: Path, data_dir: Path, corpus: Path, name: str = "run") -> Path:
    run = tmp_path / name
    overrides = ("logger=csv", f"hydra.run.dir={run}", "trainer.max_steps=4")
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    assert out.returncode == 0, out.stderr[-3000:]
    return run


def test_corpus_edited_in_place_is_refused_on_resume(tmp_path: Path, data_dir: Path) -> None:
    corpus = write_play(tmp_path / "corpus" / "play.txt")
    run = finished_run(tmp_path, data_dir, corpus)
    shuffled_copy(corpus, corpus)  # edited in place: the same characters, other text
    before = folder_state(run)
    out = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "other data" in errors[0] and "corpus" in errors[0], errors
    assert folder_state(run) == before  # nothing written: checkpoints, CSV rows, .hydra/


def test_checkpoint_into_new_run_folder_may_change_data(tmp_path: Path, data_dir: Path) -> None:
    corpus = write_play(tmp_path / "corpus" / "play.txt")
    run = finished_run(tmp_path, data_dir, corpus)
    other = shuffled_copy(corpus, tmp_path / "other" / "play.txt")
    overrides = (
        "logger=csv",
        f"hydra.run.dir={tmp_path / 'tuned'}",
        f"ckpt_path={run / 'checkpoints/last.ckpt'}",
        "trainer.max_steps=6",
    )
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=other))
    assert out.returncode == 0, out.stderr[-3000:]


def test_checkpoint_without_record_resumes_as_before(tmp_path: Path, data_dir: Path) -> None:
    corpus = write_play(tmp_path / "corpus" / "play.txt")
    run = finished_run(tmp_path, data_dir, corpus)
    last = run / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    assert STATE_KEY in checkpoint["callbacks"]
    del checkpoint["callbacks"][STATE_KEY]  # as a checkpoint of an older lmtrain
    torch.save(checkpoint, last)
    shuffled_copy(corpus, corpus)
    out = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]


def test_resume_from_another_working_directory_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """The red team's case: `data.source.path=input.txt` means the launch directory."""
    first = tmp_path / "cwd1"
    corpus = write_play(first / "input.txt")
    shuffled_copy(corpus, tmp_path / "cwd2" / "input.txt")
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    overrides = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", corpus=corpus)
    overrides = [o for o in overrides if not o.startswith("data.source.path=")]
    commands = [
        (first, [*overrides, "data.source.path=input.txt", "trainer.max_steps=4"]),
        (tmp_path / "cwd2", [f"resume={run}", "trainer.max_steps=6"]),
    ]
    outs = [
        subprocess.run(
            [sys.executable, "-m", "lmtrain.train", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        for cwd, args in commands
    ]
    assert outs[0].returncode == 0, outs[0].stderr[-3000:]
    assert outs[1].returncode == 1, outs[1].stderr[-3000:]
    errors = [line for line in outs[1].stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"resume from {first}" in errors[0], errors


def test_lower_save_top_k_on_resume_names_the_checkpoints_beyond_it(
    tmp_path: Path, data_dir: Path
) -> None:
    """(B) A run that kept its 3 best checkpoints, resumed with save_top_k=1: the state that
    Lightning restores ranks 3, and its `_update_best_and_save` removes one only while exactly
    k are ranked. `beyond_top_k` names the 2 worse ones, own best-* files on disk."""
    from lmtrain.callbacks.checkpoint_state import beyond_top_k, without_paths  # new in (B)

    corpus = write_play(tmp_path / "corpus" / "play.txt")
    run = tmp_path / "run"
    overrides = (
        "logger=csv",
        f"hydra.run.dir={run}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=1",
        "callbacks.model_checkpoint.save_top_k=3",
    )
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    assert out.returncode == 0, out.stderr[-3000:]
    states = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["callbacks"]
    (state,) = [s for key, s in states.items() if key.startswith("ModelCheckpoint")]
    ranked = state["best_k_models"]
    assert len(ranked) == 3
    beyond = beyond_top_k(state, 1, "min")
    best = min(ranked, key=lambda p: float(ranked[p]))
    assert sorted(beyond) == sorted(p for p in ranked if p != best)
    assert all(Path(p).is_file() and Path(p).name.startswith("best") for p in beyond)
    kept = without_paths(state, beyond, "min")
    assert list(kept["best_k_models"]) == [best] == [kept["kth_best_model_path"]]
    assert beyond_top_k(state, 3, "min") == beyond_top_k(state, -1, "min") == []
    assert beyond_top_k(state, 0, "min") == []  # top-k off: the run's best files stay
    # The resume itself: the two worse files go at its start, and one best file stays.
    resumed = (f"resume={run}", "trainer.max_steps=6", "callbacks.model_checkpoint.save_top_k=1")
    out = run_cli("train", *resumed)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list((run / "checkpoints").glob("best*.ckpt"))) == 1
