"""Red team rev_run22's resume findings: a run that `overwrite_run=true` replaced is never
resumed as the new one (A); a resume with nothing left to train leaves the run's record alone
(B); Lightning's `ckpt_path=best` names what lmtrain takes instead (C)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from lightning.pytorch import Callback, Trainer

from tests.helpers.cli import run_cli, tiny_cli

KILL = "+callbacks.kill._target_=tests.test_resume_inputs22.KillAtFirstStep"


class KillAtFirstStep(Callback):
    """`kill -9` of the run at its first training batch, before any checkpoint is saved."""

    def on_train_batch_start(self, trainer: Trainer, *_: object) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def finished_run(tmp_path: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """A tiny run that ended at step 4 in tmp_path/run1, and the overrides that made it."""
    run = tmp_path / "run1"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv")
    done = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert done.returncode == 0, done.stderr[-2000:]
    return run, cli


def test_resume_after_overwrite_killed_before_its_first_save_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    run, cli = finished_run(tmp_path, data_dir)
    old_best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert old_best
    # seed=7 as well: the resumed record then names other windows than the old checkpoint's.
    new = [*cli, f"hydra.run.dir={run}", "overwrite_run=true", "model.optimizer.lr=3e-3"]
    killed = run_cli("train", *new, "seed=7", "trainer.max_steps=8", KILL)
    assert killed.returncode != 0
    # The record names the kill, which resume= asks to be typed (it kills at a first step).
    resumed = run_cli("train", f"resume={run}", "+" + KILL)
    assert resumed.returncode == 1, resumed.stderr[-2000:]
    error = resumed.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "saved no checkpoint" in error, error
    assert "overwrite_run=true" in error
    assert "Restored" not in resumed.stdout + resumed.stderr
    # Nothing of the replaced run was touched by the refused resume.
    assert sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt")) == old_best
    # Started again as the line says, the new run ends, and a resume of it goes on.
    again = run_cli("train", *new, "trainer.max_steps=6")
    assert again.returncode == 0, again.stderr[-2000:]
    more = run_cli("train", f"resume={run}", "trainer.max_steps=8")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "Restored all states" in more.stdout + more.stderr


def test_killed_run_of_its_own_resumes(tmp_path: Path, data_dir: Path) -> None:
    """A run killed after its first save resumes from its own last.ckpt (the run id matches)."""
    run, _ = finished_run(tmp_path, data_dir)
    assert (run / "run_id").is_file()
    more = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert more.returncode == 0, more.stderr[-2000:]


def test_resume_of_an_ended_run_leaves_its_record_alone(tmp_path: Path, data_dir: Path) -> None:
    """(B) Nothing trained, nothing applied: the record keeps the run's values, so the next
    resume that trains is not refused over an override typed with the one before."""
    run, _ = finished_run(tmp_path, data_dir)
    record = (run / ".hydra" / "config.yaml").read_text()
    ended = run_cli("train", f"resume={run}", "trainer.accumulate_grad_batches=3")
    assert ended.returncode == 0, ended.stderr[-2000:]
    said = ended.stdout + ended.stderr
    assert "trainer.accumulate_grad_batches=3) were not applied" in said
    assert (run / ".hydra" / "config.yaml").read_text() == record
    more = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "  max_steps: 6" in (run / ".hydra" / "config.yaml").read_text()


def test_lightning_best_keyword_names_what_lmtrain_takes(tmp_path: Path, data_dir: Path) -> None:
    """(C) `ckpt_path=best` was "does not exist: pass a .ckpt file"."""
    done = run_cli("train", *tiny_cli(tmp_path, data_dir), "ckpt_path=best")
    assert done.returncode == 1
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ckpt_path=best is Lightning's name"), error
    assert "best-step=" in error and "ckpt_path=last hydra.run.dir=" in error
    assert not list((tmp_path / "logs").glob("**/checkpoints"))
