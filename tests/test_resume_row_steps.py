"""A resumed run logs each row at the step an uninterrupted run logs it at, also when it
validates at another `trainer.val_check_interval` than the run it resumes.

Red team rev_win17: a run saved at a validation (`val_check_interval=5`, ended at step 5) and
resumed with `val_check_interval=100` logged every later row one step early (two train/loss
rows at step 4), and the other way round one step late; the final validation at another step
than metrics.json's. Lightning's restart judged the saved count by the new interval. A run
killed in its final validation logged that validation one step early once resumed.
"""

from __future__ import annotations

import csv
import signal
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.corpora import one_file_corpus

STEPS, CUT = 8, 5
RUN = ["callbacks.text_samples=null", "trainer.log_every_n_steps=1", "model.scheduler=null"]


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def steps_of(run: Path, key: str) -> list[int]:
    return [int(row["step"]) for row in rows(run) if key in row]


@pytest.mark.parametrize(("before", "after"), [(5, 100), (100, 5)])
def test_a_resume_with_another_validation_interval_logs_rows_at_their_steps(
    tmp_path: Path, data_dir: Path, before: int, after: int
) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    reference = train_csv_run(
        tmp_path, data_dir, corpus, "uninterrupted", *RUN, f"trainer.max_steps={STEPS}",
        f"trainer.val_check_interval={after}",
    )  # fmt: skip
    run = train_csv_run(
        tmp_path, data_dir, corpus, "run", *RUN, f"trainer.max_steps={CUT}",
        f"trainer.val_check_interval={before}",
    )  # fmt: skip
    resumed = run_cli(
        "train",
        *tiny_cli(
            tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", *RUN, "ckpt_path=last",
            f"trainer.max_steps={STEPS}", f"trainer.val_check_interval={after}", corpus=corpus,
        ),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_of(run, "train/loss") == list(range(STEPS))  # one row a step, none twice
    assert steps_of(run, "train/lr/decay") == list(range(STEPS))
    ours = {int(r["step"]): r["train/loss"] for r in rows(run) if "train/loss" in r}
    theirs = {int(r["step"]): r["train/loss"] for r in rows(reference) if "train/loss" in r}
    assert ours == theirs
    # The final validation, at the step metrics.json reports, as the uninterrupted run's.
    assert steps_of(run, "val/loss")[-1] == steps_of(reference, "val/loss")[-1] == STEPS


def test_a_run_killed_in_its_final_validation_logs_it_at_the_last_step(
    tmp_path: Path, data_dir: Path
) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    # The last step validates too: its checkpoint is saved once that validation has ended.
    settings = [*RUN, "trainer.max_steps=6", "trainer.val_check_interval=3"]
    reference = train_csv_run(tmp_path, data_dir, corpus, "uninterrupted", *settings)
    run = tmp_path / "run"
    cli = tiny_cli(
        tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", *settings, corpus=corpus
    )
    kill = "+callbacks.kill._target_=tests.helpers.faults.KillInFinalValidation"
    killed = run_cli("train", *cli, kill, fresh=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run / "metrics.json").exists()
    resumed = run_cli("train", *cli, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_of(run, "val/loss") == steps_of(reference, "val/loss") == [2, 5, 6]
    assert steps_of(run, "train/loss") == steps_of(reference, "train/loss")
