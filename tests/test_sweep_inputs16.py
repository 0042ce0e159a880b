"""Sweeps whose jobs would leave the sweep's folder or share one, a launcher given without `-m`,
a job the nan guard stopped, and the names of an Optuna search's jobs (utils/sweep_split.py,
utils/sweep_overrides.py, utils/slurm_launcher_checks.py, utils/sweep_jobs.py,
utils/wandb_run.py; red team sweep 16).

Every refusal is one `error:` line before any job: no job folder, nothing trained.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.types import RunMode

from lmtrain import report
from lmtrain.utils.slurm_launcher_checks import launcher_without_multirun
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import SWEEP_JOB, run_cli, run_sweep, tiny_cli
from tests.test_sweeps import sabotage

pytestmark = pytest.mark.filterwarnings("ignore")

TEMPLATE = "${paths.log_dir}/${task_name}/multiruns/${now:%Y-%m-%d_%H-%M-%S_%f}"


@pytest.mark.parametrize("key", ["paths.log_dir", "paths.root_dir"])
def test_a_sweep_over_what_names_the_sweep_folder_is_refused_before_any_job(
    tmp_path: Path, data_dir: Path, key: str
) -> None:
    """hydra.sweep.dir is resolved again in each job: its jobs went to A/... and B/..., the
    sweep's folder held none, and a sweep whose every job failed exited 0."""
    a, b = tmp_path / "A", tmp_path / "B"
    own_root = tmp_path / "R"
    fixed = [f"paths.root_dir={own_root}", "paths.log_dir=${paths.root_dir}/logs"]
    out = run_cli(
        "train",
        "-m",
        *tiny_cli(tmp_path, data_dir, *SWEEP_JOB, *fixed),
        f"{key}={a},{b}",
        "model.optimizer.lr=-1",  # were a job to run, it would fail
    )
    line = assert_one_line_error(out)
    assert out.returncode == 1
    logs = {folder: folder / "logs" if key == "paths.root_dir" else folder for folder in (a, b)}
    runs = ", ".join(
        f"{key}={folder} runs in {re.escape(str(logs[folder]))}/train/multiruns/(?P=time)"
        for folder in (a, b)
    )
    expected = (
        "error: jobs of this sweep would run outside its folder "
        rf"{re.escape(str(own_root / 'logs'))}/train/multiruns/(?P<time>[\d_-]+) \({runs}\), as "
        f"hydra.sweep.dir={re.escape(TEMPLATE)} is resolved again with each job's config: the "
        "sweep would miss their results and failures: sweep keys that do not name its folder, or "
        r"pass hydra.sweep.dir=<one folder> with the sweep"
    )
    assert re.fullmatch(expected, line), line
    assert not any(folder.exists() for folder in (a, b, own_root))


@pytest.mark.parametrize(
    ("swept", "subdir", "says"),
    [
        (
            "trainer=cpu,default",
            "steps_${trainer.max_steps}",
            "hydra.sweep.subdir=steps_${trainer.max_steps} does not name trainer, so jobs of the "
            "sweep would share a folder, and Hydra writes a job's .hydra/ record before the job "
            "can refuse it, over the other's: add ${hydra:runtime.choices.trainer} to it, or "
            "leave it at its default ${hydra.job.num}",
        ),
        (
            "model.optimizer.lr=1e-3,0.001",
            "lr_${model.optimizer.lr}",
            "the sweep model.optimizer.lr=1e-3,0.001 gives two jobs the value 0.001, and "
            "hydra.sweep.subdir=lr_${model.optimizer.lr} would give them one folder, where Hydra "
            "writes the second job's .hydra/ record over the first's: sweep each value once, or "
            "add ${hydra.job.num} to hydra.sweep.subdir",
        ),
        (
            "model.optimizer.lr=1e-3,2e-3",
            "../out_${hydra.job.num}",
            "hydra.sweep.subdir=../out_${hydra.job.num} puts the jobs outside the sweep's folder, "
            "where neither the sweep's end nor lmtrain.report finds them: give a folder inside "
            "it, such as the default ${hydra.job.num}, and hydra.sweep.dir for where the sweep "
            "goes",
        ),
    ],
    ids=["group named by a key inside it", "one value twice", "subdir outside the sweep"],
)
def test_a_subdir_that_jobs_would_share_or_leave_is_refused_before_any_job(
    tmp_path: Path, data_dir: Path, swept: str, subdir: str, says: str
) -> None:
    """trainer=cpu and trainer=default both have max_steps=2: the second job's .hydra/ replaced
    the first's, and the report credited job 0 with trainer=default. `../` put the jobs beside
    the sweep's folder, where the report found none."""
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, swept, f"hydra.sweep.subdir={subdir}")
    assert assert_one_line_error(out) == f"error: {says}"
    assert not list(tmp_path.glob("**/.hydra"))


def test_the_slurm_launcher_without_multirun_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """Hydra leaves a launcher unused without -m: the run trained here and exited 0."""
    run_dir = tmp_path / "run"
    out = run_cli(
        "train", "hydra/launcher=slurm", *tiny_cli(tmp_path, data_dir), f"hydra.run.dir={run_dir}"
    )
    assert assert_one_line_error(out) == (
        "error: hydra/launcher=slurm launches the jobs of a multirun: add -m (or drop "
        "hydra/launcher to run here)"
    )
    assert not run_dir.exists()


def test_no_launcher_or_the_basic_one_without_multirun_runs_here() -> None:
    """`hydra/launcher=null` (no launcher) and `basic` run here, as Hydra does without -m."""
    for name in ("basic", "null", ""):
        assert launcher_without_multirun([f"hydra/launcher={name}"], RunMode.RUN) is None
    assert launcher_without_multirun(["hydra/launcher=slurm_local"], RunMode.MULTIRUN) is None
    assert launcher_without_multirun(["hydra/launcher=slurm_local"], RunMode.RUN) is not None


def test_a_sweep_over_log_dirs_into_one_folder_reports_its_stopped_job_as_diverged(
    tmp_path: Path, data_dir: Path
) -> None:
    """With hydra.sweep.dir given, a sweep over paths.log_dir stays in one folder and runs. The
    job that model.nan_guard=stop ended (a result, not a failure) was ranked `failed`."""
    sweep = tmp_path / "sweep"
    log_dirs = f"paths.log_dir={tmp_path / 'A'},{tmp_path / 'B'}"
    nan = [*sabotage(nan=[1]), "callbacks.text_samples=null"]
    out = run_sweep(tmp_path, data_dir, sweep, log_dirs, *nan)
    assert out.returncode == 0, out.stderr[-3000:]
    assert {job.num: job.status for job in report.read_jobs(sweep)} == {0: "ok", 1: "diverged"}


def test_an_optuna_jobs_name_leaves_out_the_keys_the_command_line_fixed(
    tmp_path: Path, data_dir: Path
) -> None:
    """hparams_search=optuna searches model.config.n_embd; typed model.config.n_embd=32 left the
    search, and still named every job (its TensorBoard folder, its W&B and MLflow run)."""
    sweep = tmp_path / "sweep"
    tiny = ("trainer.max_steps=2", "logger=tensorboard", "callbacks.text_samples=null")
    fixed = ("hydra.sweeper.n_trials=1", "model.config.n_embd=32")
    out = run_sweep(tmp_path, data_dir, sweep, *fixed, optuna=True, tiny=tiny)
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = (sweep / "0" / "tensorboard").iterdir()  # <run folder>/tensorboard/<job name>/
    keys = [part.split("=", 1)[0] for part in folder.name.split(",")]
    assert keys == [
        "model.optimizer.lr",
        "model.scheduler.num_warmup_steps",
        "model.optimizer.weight_decay",
    ]
