"""A sweep's jobs in W&B (and TensorBoard): each its own run, named and grouped as its job, also
when the job is continued later as a single run (utils/sweep_job_names.py,
utils/sweep_run_ids.py, utils/wandb_run.py, utils/callback_checks.py; red team logsweep 17).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error, refusal
from tests.helpers.cli import inspect_session, run_cli, run_sweep, tiny_cli

WANDB_AND_TB = ("trainer.max_steps=2", "logger=[wandb,tensorboard]")


def wandb_sessions(run_dir: Path) -> list[dict]:
    """The `run` record (id, name, group) of each offline W&B session under `run_dir/wandb`, in
    the order they ran."""
    records = []
    for session in sorted((run_dir / "wandb").glob("offline-run-*")):
        lines = inspect_session(session, "--json").splitlines()
        records.append(next(r["run"] for r in map(json.loads, lines) if r.get("type") == "run"))
    return [
        {"id": r["run_id"], "name": r.get("display_name"), "group": r.get("run_group")}
        for r in records
    ]


def tensorboard_steps(folder: Path, tag: str = "train/loss") -> list[int]:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def test_a_wandb_id_fixed_for_a_sweep_is_refused_before_any_job_logs(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "seed=1,2", "logger.wandb.id=exp1",
                    tiny=("trainer.max_steps=2", "logger=wandb"))  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    line = (
        "logger.wandb.id=exp1 is one W&B run id for every job of the sweep, which would log "
        "them all into one run: drop it (logger.wandb.id=null: each job a new W&B run, which "
        "resuming the job continues), or make it differ per job, "
        "'logger.wandb.id=exp1-${hydra:job.num}'"
    )
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 2 of 2 jobs of the sweep under {sweep} failed (job 0 in 0: {line}; job 1 in 1: "
        f"{line}): see each one's log above or its train.log; no job has a result"
    )
    for job in ("0", "1"):  # refused before the W&B run or its id file was made
        assert not (sweep / job / "wandb_run_id").exists()
        assert not (sweep / job / "wandb").exists()


def test_an_id_every_job_resolves_alike_is_refused_at_the_job_that_would_share_it(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "seed=1,2", "logger.wandb.id=${oc.env:EXP_ID}",
                    tiny=("trainer.max_steps=2", "logger=wandb"),
                    env={"EXP_ID": "shared"})  # fmt: skip
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 2 jobs of the sweep under {sweep} failed (job 1 in 1: logger.wandb.id="
        f"shared is also the W&B run id of {sweep / '0'}, another job of this sweep: the two "
        "would log into one run: drop it (logger.wandb.id=null: each job a new W&B run, which "
        "resuming the job continues), or make it differ per job, "
        "'logger.wandb.id=shared-${hydra:job.num}'): see each one's log above or its "
        "train.log; the other jobs' results are in their folders"
    )
    assert [s["id"] for s in wandb_sessions(sweep / "0")] == ["shared"]
    assert not (sweep / "1" / "wandb").exists()


def test_a_resumed_sweep_job_keeps_its_wandb_run_name_group_and_tensorboard_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    """resume=<sweep>/<n> and ckpt_path=last hydra.run.dir=<job folder> run as single runs:
    they go on in the job's W&B run, with the job's name and group (syncing renamed and
    ungrouped it), and in its TensorBoard folder (a second run beside it); an id that differs
    per job by `${hydra:job.num}` stays the job's (resumed, it was `exp1-None`)."""
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "seed=1,2", "logger.wandb.id=exp1-${hydra:job.num}",
                    tiny=WANDB_AND_TB)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    job = sweep / "1"
    resumed = run_cli("train", f"resume={job}", "trainer.max_steps=4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    again = run_cli("train", *tiny_cli(tmp_path, data_dir, *WANDB_AND_TB), "seed=2",
                    "trainer.max_steps=6", "ckpt_path=last", f"hydra.run.dir={job}")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]

    assert (job / "wandb_run_id").read_text().strip() == "exp1-1"
    assert wandb_sessions(job) == [{"id": "exp1-1", "name": "seed=2", "group": "train/sweep"}] * 3
    tensorboard = job / "tensorboard"
    assert [p.name for p in tensorboard.iterdir()] == ["seed=2"]  # no events beside it
    assert tensorboard_steps(tensorboard / "seed=2") == [0, 1, 2, 3, 4, 5]


def test_optuna_trials_that_draw_one_point_are_told_apart_by_their_job_number(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, "hydra.sweeper.n_trials=2",
                    "model.optimizer.lr=choice(0.001)", "model.scheduler.num_warmup_steps=0",
                    "model.optimizer.weight_decay=0.1", optuna=True, tiny=WANDB_AND_TB)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    for num in (0, 1):
        name = f"model.optimizer.lr=0.001 (job {num})"
        assert [s["name"] for s in wandb_sessions(sweep / str(num))] == [name]
        assert [p.name for p in (sweep / str(num) / "tensorboard").iterdir()] == [name]


def test_a_number_as_a_wandb_name_or_group_is_refused_in_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=wandb"),
                  "logger.wandb.group=2024", f"hydra.run.dir={run}")  # fmt: skip
    assert assert_one_line_error(out) == (
        "error: logger.wandb.group=2024 is not text, which W&B needs: quote it, "
        "'logger.wandb.group=\"2024\"' (a ${...} of a number: put text around it, "
        "'logger.wandb.group=lr${model.optimizer.lr}')"
    )
    assert not (run / "wandb_run_id").exists() and not (run / "wandb").exists()


@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("logger.wandb.name=${model.optimizer.lr}", "logger.wandb.name=0.001"),
        ("logger.wandb.job_type=7", "logger.wandb.job_type=7"),
        ("+logger.wandb.notes=true", "logger.wandb.notes=True"),
    ],
)
def test_each_wandb_text_setting_takes_only_text(compose_cfg, override: str, shown: str) -> None:
    cfg = compose_cfg("logger=wandb", "model.optimizer.lr=0.001", override)
    assert refusal(lambda: check_train_config(cfg)).startswith(f"{shown} is not text, which W&B")


def test_the_suggested_text_forms_pass(compose_cfg) -> None:
    typed = ('logger.wandb.group="2024"', "logger.wandb.name=lr${model.optimizer.lr}")
    cfg = compose_cfg("logger=wandb", "model.optimizer.lr=0.001", *typed)
    check_train_config(cfg)
    assert (cfg.logger.wandb.group, cfg.logger.wandb.name) == ("2024", "lr0.001")
