"""A run resumed with another `monitor` or `mode` of its best checkpoint cannot rank by the old
scores, so it starts its ranking afresh; the old best-* file stays on disk (it is the user's),
no longer counted by `save_top_k`, and the resume names it in one warning (red team 28, LOW 3:
it was left there without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli

UNTRACKED = "are no longer tracked"


@pytest.mark.parametrize(
    "changed",
    ["callbacks.model_checkpoint.monitor=val/ppl", "callbacks.model_checkpoint.mode=max"],
)
def test_a_resume_ranking_by_another_monitor_or_mode_names_the_old_best_file(
    tmp_path: Path, data_dir: Path, changed: str
) -> None:
    """The resume warns once, naming the old best file, which stays beside the new run's best;
    a later resume with the same setting ranks by its own state and warns about nothing."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv")
    first = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-3000:]
    (old,) = (run / "checkpoints").glob("best-*.ckpt")
    resume = [f"hydra.run.dir={run}", "ckpt_path=last", changed]
    resumed = run_cli("train", *cli, *resume, "trainer.max_steps=6")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = [line for line in resumed.stderr.splitlines() if UNTRACKED in line]
    assert len(lines) == 1, resumed.stderr[-3000:]
    assert repr(str(old)) in lines[0] and "delete them by hand" in lines[0], lines
    assert ", mode='min'" in lines[0], lines  # the old ranking, named
    assert old.is_file()  # never deleted
    best = sorted(p.name for p in (run / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 2 and old.name in best and best[-1].startswith("best-step=6-"), best
    again = run_cli("train", *cli, *resume, "trainer.max_steps=8")
    assert again.returncode == 0, again.stderr[-3000:]
    assert UNTRACKED not in again.stderr
