"""Sweeps: a Hydra multirun grid and an Optuna study, every job in its own folder and W&B run.

Both run the real CLI (`python -m lmtrain.train -m ...`) and read the W&B offline runs back with
`wandb leet inspect`. A job is made to fail, or to diverge, by `tests.helpers.faults.Sabotage`,
added to the run like any callback.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import optuna
import pytest
import yaml
from matplotlib import image

from lmtrain import report
from tests.helpers.cli import run_cli, tiny_cli, wandb_records, wandb_summary


def wandb_run_record(run_dir: Path) -> dict:
    """The `run` record of the offline W&B run under `run_dir/wandb` (name, group, id)."""
    return next(r["run"] for r in wandb_records(run_dir) if r.get("type") == "run")


def sabotage(fail: list[int] = (), nan: list[int] = ()) -> list[str]:
    """Overrides that make jobs `fail` fail at their first step and jobs `nan` diverge."""
    return [
        "+callbacks.sabotage._target_=tests.helpers.faults.Sabotage",
        "+callbacks.sabotage.job=${hydra:job.num}",
        f"+callbacks.sabotage.fail_jobs={list(fail)}",
        f"+callbacks.sabotage.nan_jobs={list(nan)}",
    ]


def test_grid_runs_each_job_in_its_folder_with_its_own_wandb_run(
    tmp_path: Path, data_dir: Path
) -> None:
    # Each job is itself a 2-process DDP run: Lightning starts rank 1 anew for every job.
    grid = ["model.optimizer.lr=1e-3,3e-4", "trainer=ddp_cpu"]
    out = run_cli("train", "-m", *tiny_cli(tmp_path, data_dir), *grid)
    assert out.returncode == 0, out.stderr[-3000:]

    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()
    jobs = [sweep / "0", sweep / "1"]
    # .jobs/: the sweep's ledger (utils/sweep_ledger.py), one record per job.
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == [".jobs", "0", "1"]
    summaries = [wandb_summary(job) for job in jobs]
    records = [wandb_run_record(job) for job in jobs]
    for job, summary, lr in zip(jobs, summaries, ("0.001", "0.0003"), strict=True):
        assert summary["state"] == "finished" and summary["exit_code"] == 0
        assert summary["config"]["model"]["optimizer"]["lr"] == float(lr)
        assert summary["config"]["params/total"] > 0  # parameter counts in the run config
        # Named by what the sweep varies, grouped by the sweep folder.
        assert summary["name"] == f"model.optimizer.lr={lr}"
        assert (job / "wandb_run_id").read_text().strip() == summary["run_id"]
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["trainer/global_step"] == 4
        assert metrics["tokens_seen"] == 4 * 2 * 8 * 32  # steps x ranks x batch x block
    assert {r["run_group"] for r in records} == {f"train/{sweep.name}"}
    assert summaries[0]["run_id"] != summaries[1]["run_id"]
    # One after the other: the first run was closed before the second started.
    assert summaries[0]["last_write"] <= summaries[1]["start_time"]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    """A 3-trial Optuna study (hparams_search=optuna) in which trial 1 fails and trial 2
    diverges; kept in SQLite so that the trials can be read back."""
    tmp_path = tmp_path_factory.mktemp("study")
    sweep = tmp_path / "sweep"
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    out = run_cli(
        "train",
        "hparams_search=optuna",
        *tiny_cli(tmp_path, data_dir),
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep}",
        # A diverged model's samples would be NaN logits: this trial is about the metric.
        "callbacks.text_samples=null",
        # Trial 2 takes the sweep's path for a model that diverged unnoticed (val/loss NaN,
        # scored inf); the NaN guard, which would stop it first, has its own tests.
        "model.nan_guard=off",
        *sabotage(fail=[1], nan=[2]),
    )
    return {"out": out, "sweep": sweep, "storage": storage}


@pytest.mark.slow
def test_optuna_study_goes_on_past_a_failed_and_a_diverged_trial(study: dict) -> None:
    sweep, out = study["sweep"], study["out"]
    # Every trial ran; the failed one makes the sweep's exit status 1, in one line at the end.
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 3 jobs of the sweep under {sweep} failed (job 1 in 1: RuntimeError: "
        "sabotaged job 1): see each one's log above or its train.log; the other jobs' results "
        "are in their folders"
    )

    trials = optuna.load_study(study_name="train", storage=study["storage"]).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    values = [t.value for t in trials]
    assert math.isfinite(values[0]) and values[1:] == [math.inf, math.inf]
    # Each trial sampled the search space (the width is fixed on the command line).
    assert {"model.optimizer.lr", "model.scheduler.num_warmup_steps"} <= trials[0].params.keys()
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(values[0])

    states = [wandb_summary(sweep / str(n)) for n in range(3)]
    assert [s["state"] for s in states] == ["finished", "failed", "finished"]
    assert states[1]["exit_code"] != 0
    assert "sabotaged job 1" in (sweep / "1" / "train.log").read_text()
    assert "diverged (val/loss=nan); reporting inf" in (sweep / "2" / "train.log").read_text()
    assert math.isnan(json.loads((sweep / "2" / "metrics.json").read_text())["val/loss"])
    assert len({s["run_id"] for s in states}) == 3
    # Named by the sampled values of the search space.
    assert states[0]["name"].startswith("model.optimizer.lr=")


@pytest.mark.slow
def test_report_of_the_study_ranks_its_trials_and_plots_their_curves(study: dict) -> None:
    sweep = study["sweep"]
    assert study["out"].returncode == 1, study["out"].stderr[-3000:]  # trial 1 failed
    report.main([str(sweep)])

    with (sweep / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["status"]) for r in rows] == [
        ("0", "ok"),
        ("2", "diverged"),
        ("1", "failed"),
    ]
    # A column per sampled parameter; what every trial shared is not a column.
    assert {"model.optimizer.lr", "model.optimizer.weight_decay"} <= rows[0].keys()
    assert "data.source.path" not in rows[0]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert float(rows[0]["val/loss"]) == metrics["val/loss"]  # every digit
    assert rows[0]["wandb_id"] == (sweep / "0" / "wandb_run_id").read_text().strip()

    markdown = (sweep / "report.md").read_text()
    assert "| rank | job | status | model.optimizer.lr |" in markdown
    assert "| 3 | 1 | failed |" in markdown
    assert "`data.tokenizer.kind=char`" in markdown  # shared overrides, listed once

    # Curves from the W&B runs: the validations after steps 2 and 4 (logged by Lightning at
    # 0-based steps 1 and 3), then the final whole-split one, the val/loss of metrics.json.
    curves = {job.num: job.curve for job in report.read_jobs(sweep)}
    assert [step for step, _ in curves[0]] == [1, 3, 4]
    assert curves[0][-1][1] == pytest.approx(metrics["val/loss"], rel=1e-6)
    assert curves[1] == []  # failed at its first step: no validation
    png = image.imread(sweep / "val_curves.png")
    assert png.shape[:2] == (500, 800)
