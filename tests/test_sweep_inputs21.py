"""Red team rev_sweep21: a preempted sweep job that ends the sweep, and Hydra flags that clash.

- A basic-launcher sweep whose job is preempted (SIGUSR1 here, sent by the job to itself before
  a validation: `tests.helpers.faults.SignalBeforeValidation`) ends the process, and the sweep
  with it. The jobs after it never ran, and nothing said so: the ledger had no record of the
  preempted job, and `lmtrain.report` showed it as failed, counted only the jobs that ran and
  listed the swept key as "same in every job".
- `-m ... --cfg job` (and `--info`, `--run -m`) ended in Hydra's traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain import report
from lmtrain.utils.sweep_jobs import Job
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


def test_a_preempted_job_ends_the_sweep_in_words_the_ledger_and_report_keep(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_cli(
        "train",
        "-m",
        *tiny_cli(tmp_path, data_dir),
        "trainer.max_steps=30,31",
        "trainer.val_check_interval=10",
        "logger=csv",
        "callbacks.text_samples=null",
        "+callbacks.sig._target_=tests.helpers.faults.SignalBeforeValidation",
        f"hydra.sweep.dir={sweep}",
    )
    assert out.returncode == 138, out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2, out.stderr[-3000:]
    assert errors[0].startswith("error: preempted by SIGUSR1"), errors
    cut = errors[1]
    assert f"the sweep under {sweep} was cut short at job 0 (preempted)" in cut, cut
    assert "1 job(s) did not run (job 1 (trainer.max_steps=31))" in cut, cut
    # One command runs what did not: that job's value, into a folder of its own.
    assert "python -m lmtrain.train -m " in cut and "trainer.max_steps=31 " in cut, cut
    assert f"hydra.sweep.dir={sweep}_rest" in cut and "trainer.max_steps=30" not in cut, cut
    assert not (sweep / "1").exists()

    # The ledger: the preempted job, resumable, and the job that did not run.
    record = json.loads((sweep / ".jobs" / "0.json").read_text())
    assert record["ok"] is False and record["resume"] == f"resume with resume={sweep / '0'}"
    ledger = json.loads((sweep / ".jobs" / "sweep.json").read_text())
    assert [o for o in ledger["not_run"][0] if o.startswith("trainer.max_steps")] == [
        "trainer.max_steps=31"
    ]

    paths = report.write_report(sweep)
    md = paths["md"].read_text()
    assert "2 jobs by val/loss (1 did not run: the sweep was cut short)" in md, md
    rows = {row.split(" | ")[1]: row for row in md.splitlines() if row.startswith("| ")}
    assert "| preempted | 30 |" in rows["0"] and "| not run | 31 |" in rows["1"], md
    same = next(line for line in md.splitlines() if line.startswith("Same in every job"))
    assert "trainer.max_steps" not in same, same
    assert f"Job 0 was preempted: resume with resume={sweep / '0'}." in md, md


def job(num: int, **overrides: str) -> Job:
    return Job(num, Path(str(num)), overrides, {}, "val/loss")


def test_a_key_the_sweep_sweeps_is_never_same_in_every_job() -> None:
    # Only one of its values has a job folder (the others never ran, or were removed).
    jobs = [job(0, seed="1", lr="0.1"), job(1, seed="1", lr="0.2")]
    tab = report.table(jobs, swept={"seed"})
    assert tab.varying == ["lr"] and tab.fixed == {} and tab.one_value == {"seed": "1"}
    assert report.table(jobs).fixed == {"seed": "1"}  # a key no sweep varies


def test_the_command_for_jobs_left_is_one_sweep_where_they_are_a_grid(tmp_path: Path) -> None:
    from lmtrain.utils.sweep_plan import rerun_command  # new with the fix

    config = OmegaConf.create({"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN"]}}})
    grid = [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]
    command = rerun_command(grid[2:], "lmtrain.train", config, tmp_path / "s")
    assert command == f"python -m lmtrain.train -m a=2 b=x,y hydra.sweep.dir={tmp_path}/s_rest"
    # Jobs 1, 2, 3 are no grid of their own: one job's command, as an example.
    command = rerun_command(grid[1:], "lmtrain.train", config, tmp_path / "s")
    assert command.startswith("one command per job, each into its own sweep folder (_rest_1")
    assert "python -m lmtrain.train -m a=1 b=y " in command
    assert command.endswith(f"hydra.sweep.dir={tmp_path}/s_rest_1")  # not _rest: refused twice


@pytest.mark.parametrize(
    ("module", "flags", "fragments"),
    [
        ("train", ["-m", "seed=1,2", "--cfg", "job"], ["-m/--multirun and --cfg job", "drop -m"]),
        ("train", ["-m", "hydra/launcher=slurm", "--cfg", "hydra"], ["--cfg hydra without -m"]),
        ("train", ["--multi", "seed=1,2", "--info"], ["-m/--multirun and --info all"]),
        ("train", ["--run", "-m"], ["-m/--multirun and --run"]),
        ("train", ["--resolve", "seed=1"], ["--resolve", "add --cfg job"]),
        ("train", ["--resolve", "--hydra-help"], ["--resolve", "add --cfg job"]),
        ("eval", ["-m", "--cfg", "job"], ["-m/--multirun and --cfg job"]),
        ("generate", ["-m", "--info", "defaults"], ["-m/--multirun and --info defaults"]),
        ("export", ["--cfg", "job", "--info"], ["--cfg job and --info all", "not both"]),
    ],
)
def test_hydra_flags_that_clash_are_one_line(
    module: str, flags: list[str], fragments: list[str]
) -> None:
    out = run_cli(module, *flags)
    assert out.returncode == 1, out.stderr[-2000:]
    clash = "Hydra runs one of these at a time" * ("--resolve" not in flags)
    assert_one_line_error(out, clash)
    assert_one_line_error(out, *fragments)


def test_flags_hydra_takes_alone_still_work() -> None:
    out = run_cli("train", "--cfg", "job", "seed=3")
    assert out.returncode == 0 and "seed: 3" in out.stdout, out.stderr[-2000:]


def test_an_optuna_study_in_memory_is_not_said_to_be_resumable(tmp_path: Path) -> None:
    from lmtrain.utils.sweep_plan import not_run_line  # new with the fix

    def line(storage: str | None) -> str:
        config = OmegaConf.create({"hydra": {"sweeper": {"storage": storage, "n_trials": 4}}})
        return not_run_line(tmp_path, 0, [], 3, "lmtrain.train", config)

    assert "its study was in memory (hydra.sweeper.storage=null)" in line(None)
    assert "mark it failed" not in line(None)
    assert "mark it failed" in line("sqlite:///optuna.db")
