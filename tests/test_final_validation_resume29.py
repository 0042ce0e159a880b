"""The resume of a run stopped by SIGTERM in its final validation (red team edge29).

The run's `error:` line asks for the same command with `ckpt_path=last`; that resume trains
nothing and runs the final validation. It warned that "the run had ended" and that its
overrides (the run's own) "were not applied". It must say nothing of the run's own overrides,
and name only those that differ from the run's record, as a run that had finished training.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.helpers.cli import run_cli, tiny_cli
from tests.test_preemption_final_validation import TermInFinalValidation

TERM = f"{TermInFinalValidation.__module__}.{TermInFinalValidation.__name__}"


def stopped_in_final_validation(tmp_path: Path, data_dir: Path) -> tuple[Path, list[str]]:
    """A 4-step run SIGTERM stopped in its final validation, and the command that ran it (the
    signal fires once: its marker file then exists)."""
    run = tmp_path / "run"
    cli = [
        *tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null"),
        f"hydra.run.dir={run}",
        f"+callbacks.term._target_={TERM}",
        f"+callbacks.term.marker={tmp_path / 'signalled'}",
        "+callbacks.term.rank=0",
    ]
    out = run_cli("train", *cli)
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "error: terminated by SIGTERM outside the training steps: nothing was saved after the "
        f"last checkpoint; resume with ckpt_path=last hydra.run.dir={run}"
    )
    assert not (run / "metrics.json").exists()
    return run, cli


def record(run: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (run / ".hydra").iterdir() if p.is_file()}


def test_the_resume_the_error_line_asks_for_warns_of_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    run, cli = stopped_in_final_validation(tmp_path, data_dir)
    before = record(run)
    out = run_cli("train", *cli, "ckpt_path=last")
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "were not applied" not in said and "had ended" not in said, said[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
    assert record(run) == before and not (run / ".hydra" / "previous").exists()


def test_a_differing_override_is_named_as_the_final_validations_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    """Through `resume=`, whose record holds the run's values: a typed value the run already
    had (trainer.max_steps=4, the callback's target typed as `++`) is its own; a new learning
    rate trained nothing."""
    run, _ = stopped_in_final_validation(tmp_path, data_dir)
    before = record(run)
    trusted = f"++callbacks.term._target_={TERM}"  # resume= asks for a target no config names
    out = run_cli(
        "train", f"resume={run}", trusted, "trainer.max_steps=4", "model.optimizer.lr=0.5"
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "had ended" not in said, said[-3000:]
    assert (
        "The run had finished training at step 4; this resume runs its final validation only "
        "and trains nothing: the overrides typed with it that differ from its .hydra/ record "
        "(model.optimizer.lr=0.5) were not applied to training, and that record stands"
    ) in said, said[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
    assert record(run) == before
