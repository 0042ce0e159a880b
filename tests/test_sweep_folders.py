"""A sweep's folder, its launchers and what it reports (utils/run_folder.py, utils/launch.py,
utils/sweep_checks.py, utils/sweep_jobs.py).

A second sweep into a folder that holds one is refused before Hydra rewrites anything; with
`overwrite_run=true` it runs, and a job is judged by what it wrote itself, not by an earlier
sweep's metrics.json. Settings that Hydra's plugins would end with a traceback (an empty Optuna
range, SLURM without srun, nodes no one starts), and a sweep whose jobs would leave its folder,
are one `error:` line before any job. DDP jobs
under the submitit launcher start their ranks as `lmtrain.train`, not as submitit's runner.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import yaml
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain import report
from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, run_sweep, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.test_sweeps import sabotage

pytestmark = pytest.mark.filterwarnings("ignore")


# The Optuna searches' size: 2 trials of a model as wide as TINY's.
TWO_TRIALS = ("hydra.sweeper.n_trials=2", "model.config.n_embd=32")


def report_rows(sweep: Path) -> list[tuple[int, dict[str, str], dict[str, float]]]:
    """What `lmtrain.report` reads of each job: its number, overrides and metrics."""
    return [(job.num, job.overrides, job.metrics) for job in report.read_jobs(sweep)]


@pytest.fixture(scope="module")
def first_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A finished 2-trial Optuna search (2 job folders and optimization_results.yaml)."""
    tmp_path = tmp_path_factory.mktemp("first")
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, *TWO_TRIALS, optuna=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep / "optimization_results.yaml").is_file()
    return sweep


def test_a_second_sweep_into_a_sweep_folder_is_refused_and_changes_nothing(
    first_sweep: Path, tmp_path: Path, data_dir: Path
) -> None:
    before, rows = tree_digest(first_sweep), report_rows(first_sweep)
    for optuna, search in (
        (False, "model.optimizer.lr=5e-2,9e-2"),
        (True, "hydra.sweeper.n_trials=1"),
    ):
        out = run_sweep(tmp_path, data_dir, first_sweep, search, optuna=optuna)
        assert_one_line_error(
            out,
            f"hydra.sweep.dir={first_sweep} already holds another sweep's jobs "
            "(optimization_results.yaml, 0, 1)",
            "pass another hydra.sweep.dir",
            "overwrite_run=true",
        )
        assert out.returncode == 1
        assert "Launching" not in out.stdout + out.stderr  # refused before any job
    assert tree_digest(first_sweep) == before  # .hydra/ records, metrics, Optuna results
    assert report_rows(first_sweep) == rows


def test_an_earlier_sweeps_jobs_three_folders_deep_are_refused_too(
    first_sweep: Path, tmp_path: Path, data_dir: Path
) -> None:
    """`hydra.sweep.subdir=a/b/${hydra.job.num}`: the search looked two levels down, so a
    second sweep started, Hydra rewrote the finished job's .hydra/ (lr 0.05 beside a model
    trained at 1e-3), and its ledger then showed that job as failed (red team rev_sweep16)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(first_sweep / "0", sweep / "a" / "b" / "0")
    before = tree_digest(sweep)
    out = run_sweep(
        tmp_path,
        data_dir,
        sweep,
        "model.optimizer.lr=5e-2",
        "hydra.sweep.subdir=a/b/${hydra.job.num}",
    )
    assert_one_line_error(
        out,
        f"hydra.sweep.dir={sweep} already holds another sweep's jobs (a/b/0), whose records "
        "this sweep would replace",
    )
    assert tree_digest(sweep) == before


def test_overwrite_run_sweep_counts_only_what_its_own_jobs_wrote(
    first_sweep: Path, tmp_path: Path, data_dir: Path
) -> None:
    # The earlier sweep's job 0 has a metrics.json; this sweep's job 0 fails before writing one.
    sweep = tmp_path / "sweep"
    shutil.copytree(first_sweep, sweep)
    job_1 = tree_digest(sweep / "1")
    out = run_sweep(
        tmp_path,
        data_dir,
        sweep,
        "model.optimizer.lr=5e-2",
        "overwrite_run=true",
        *sabotage(fail=[0]),
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 1 of 1 jobs of the sweep under {sweep} failed (job 0 in 0: RuntimeError: "
        "sabotaged job 0): see each one's log above or its train.log; no job has a result"
    )
    assert (sweep / "0" / "metrics.json").is_file()  # nothing deleted ...
    assert tree_digest(sweep / "1") == job_1  # ... and another job's folder left alone
    # The report reads the sweep's ledger: job 0's metrics.json is the earlier sweep's, and
    # folder 1 is only the earlier sweep's (it was ranked as this sweep's job).
    statuses = {job.num: job.status for job in report.read_jobs(sweep)}
    assert statuses == {0: "failed"}


@pytest.mark.parametrize(
    ("sweep_args", "missing"),
    [
        (["seed=1,2"], "seed"),
        (["hparams_search=optuna", "hydra.sweeper.n_trials=2"], "hydra.job.num (Optuna may"),
        (["logger=csv,none"], "logger"),
    ],
    ids=["basic", "optuna", "group"],
)
def test_a_subdir_two_jobs_could_share_is_refused_before_any_job(
    tmp_path: Path, data_dir: Path, sweep_args: list[str], missing: str
) -> None:
    """The second job was refused in the folder the first filled, but Hydra had written its
    .hydra/ record there first: the finished job's config then said seed 2, its report and its
    resume read the wrong seed (red team rev_sweep)."""
    sweep = tmp_path / "sweep"
    subdir = "lr_${model.optimizer.lr}"
    out = run_sweep(tmp_path, data_dir, sweep, *sweep_args, f"hydra.sweep.subdir={subdir}")
    line = assert_one_line_error(out, f"error: hydra.sweep.subdir={subdir} does not name {missing}")
    assert line.endswith("or leave it at its default ${hydra.job.num}"), line
    assert not list(sweep.glob("*/.hydra"))


def test_override_dirname_without_an_excluded_key_the_sweep_varies_is_refused(
    tmp_path: Path, data_dir: Path
) -> None:
    """configs/hydra/default.yaml leaves paths.* out of override_dirname: two data folders gave
    two jobs one folder (red team rev_diff11)."""
    subdir = "${hydra.job.override_dirname}"
    out = run_sweep(
        tmp_path,
        data_dir,
        tmp_path / "sweep",
        f"paths.data_dir={tmp_path / 'd1'},{tmp_path / 'd2'}",
        f"hydra.sweep.subdir={subdir}",
    )
    assert_one_line_error(out, f"hydra.sweep.subdir={subdir} does not name paths.data_dir")


@pytest.mark.parametrize("over", ["corpora", "group choice"])
def test_sweeps_over_a_mandatory_key_or_named_by_group_choice_run(
    tmp_path: Path, data_dir: Path, over: str
) -> None:
    """data.source.path is `???` in the sweep's own config: the start check read it as a key the
    config lacks, and refused a sweep over corpora; a group's choice in the subdir names each
    job, and was refused too (red team rev_diff11)."""
    sweep = tmp_path / "sweep"
    if over == "corpora":
        corpora = [one_file_corpus(tmp_path / name, seed=i) for i, name in enumerate("ab")]
        swept = ["logger=csv", f"data.source.path={corpora[0]},{corpora[1]}"]
    else:
        swept = ["logger=csv,none", "hydra.sweep.subdir=${hydra:runtime.choices.logger}"]
    tiny = ("trainer.max_steps=2", "callbacks.text_samples=null")
    out = run_sweep(tmp_path, data_dir, sweep, *swept, tiny=tiny)
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(sweep.glob("*/metrics.json"))) == 2


def test_a_maximizing_search_given_as_a_list_scores_a_failed_trial_worst(
    tmp_path: Path, data_dir: Path
) -> None:
    """`hydra.sweeper.direction=[maximize]`, which Hydra's Optuna sweeper takes: read as text
    it was never "maximize", so the failed trial scored +inf and was the study's best (rev_sweep).
    Several objectives are refused before any trial: a job returns one value."""
    sweep = tmp_path / "sweep"
    maximize = ["hydra.sweeper.direction=[maximize]", *sabotage(fail=[1])]
    out = run_sweep(tmp_path, data_dir, sweep, *TWO_TRIALS, *maximize, optuna=True)
    assert out.returncode == 1, out.stderr[-3000:]  # one failed trial fails the sweep
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert best == json.loads((sweep / "0" / "metrics.json").read_text())["val/loss"]
    both = run_sweep(
        tmp_path,
        data_dir,
        tmp_path / "two",
        *TWO_TRIALS,
        "hydra.sweeper.direction=[maximize,minimize]",
        optuna=True,
    )
    assert_one_line_error(
        both,
        "error: hydra.sweeper.direction=['maximize', 'minimize'] asks for 2 objectives, and "
        "each job returns one value (optimized_metric): pass one direction",
    )


def test_a_job_the_nan_guard_stops_is_a_diverged_result_not_a_failure(
    tmp_path: Path, data_dir: Path
) -> None:
    """scaling.md: "a diverged job is a result, not a failure"; with the default
    model.nan_guard=stop, the guard's stop made it a failure, and the sweep exited 1 (rev_sweep)."""
    sweep = tmp_path / "sweep"
    out = run_sweep(
        tmp_path, data_dir, sweep, "seed=1,2", "callbacks.text_samples=null", *sabotage(nan=[1])
    )
    assert out.returncode == 0, out.stderr[-3000:]
    log = (sweep / "1" / "train.log").read_text()
    assert " diverged; reporting inf" in log
    # NaN weights at step 1: the model as built, whatever the learning rate or clipping.
    assert "before any update" in out.stderr and "gradient_clip_val" not in out.stderr
    assert (sweep / "0" / "metrics.json").is_file()


def test_a_search_whose_every_trial_failed_keeps_no_best_value(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, *TWO_TRIALS, *sabotage(fail=[0, 1]), optuna=True)
    assert out.returncode == 1, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: 2 of 2 jobs of the sweep under {sweep} failed (job 0 in 0: RuntimeError: "
        "sabotaged job 0; job 1 in 1: RuntimeError: sabotaged job 1): see each one's log above "
        "or its train.log; no job has a result (no optimization_results.yaml: no trial scored "
        "a finite value)"
    )
    assert not (sweep / "optimization_results.yaml").exists()
    # The start checks ran (an override with ${hydra:job.num} once broke them into a warning).
    assert "on_multirun_start raised" not in out.stderr


@pytest.mark.parametrize(
    ("space", "shown", "optuna_says"),
    [
        (
            "model.optimizer.lr=interval(1e-2,1e-4)",
            "model.optimizer.lr=interval(1e-2,1e-4)",
            "must be smaller than or equal to the `high` value",
        ),
        (
            "hydra.sweeper.params={model.optimizer.lr:'tag(log, interval(0, 1e-2))'}",
            "hydra.sweeper.params.model.optimizer.lr=tag(log, interval(0, 1e-2))",
            "must be larger than 0 for a log distribution",
        ),
    ],
)
def test_an_empty_or_non_positive_log_search_range_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, shown: str, optuna_says: str
) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(tmp_path, data_dir, sweep, space, optuna=True, tiny=())
    assert_one_line_error(
        out, f"the search space {shown} is not a range Optuna can sample", optuna_says
    )
    assert not sweep.exists()


def test_a_sweep_over_experiments_stays_in_one_folder(tmp_path: Path, data_dir: Path) -> None:
    """`-m experiment=a,b` whose experiments set task_name put each job under its own
    logs/<task_name>/multiruns/<time>: SweepOutcome, which reads the sweep's folder, saw no job
    (a failed one exited 0). Refused before any job; with one task_name it runs in one folder."""
    experiments = tmp_path / "configs" / "experiment"
    experiments.mkdir(parents=True)
    for name in ("exp_a", "exp_b"):
        (experiments / f"{name}.yaml").write_text(f"# @package _global_\ntask_name: {name}\n")
    sweep = [
        "-m",
        f"hydra.searchpath=[file://{tmp_path / 'configs'}]",
        *tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv"),
        "experiment=exp_a,exp_b",
    ]
    out = run_cli("train", *sweep)
    assert_one_line_error(
        out,
        "other task_names than its own, train (experiment=exp_a runs as exp_a, experiment=exp_b",
        "pass task_name=<one name> with the sweep",
    )
    assert not (tmp_path / "logs").exists()
    # A glob over the shipped experiments (its options listed by Hydra's config loader).
    shipped = ["-m", "experiment=glob(shakespeare_char*)", f"paths.log_dir={tmp_path / 'logs'}"]
    out = run_cli("train", *shipped, f"++data.source.path={tmp_path / 'corpus'}")
    assert_one_line_error(out, "experiment=shakespeare_char_fast runs as shakespeare_char_fast")
    assert not (tmp_path / "logs").exists()
    out = run_cli("train", *sweep, "task_name=both")
    assert out.returncode == 0, out.stderr[-3000:]
    (folder,) = (tmp_path / "logs" / "both" / "multiruns").iterdir()
    assert [len(report.read_jobs(folder))] == [2] and sorted(os.listdir(tmp_path / "logs")) == [
        "both"
    ]


# SLURM's client commands: the child's PATH holds every other command of /usr/bin and /bin.
SLURM_COMMANDS = {"srun", "sbatch", "salloc", "sattach", "scancel", "squeue", "sinfo", "scontrol"}


def test_the_slurm_launcher_without_srun_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """Also on a SLURM node: the child's PATH is a folder of links to the machine's commands
    less SLURM's, as on a machine that is not part of a cluster."""
    path = tmp_path / "bin"
    path.mkdir()
    for folder in (Path("/usr/bin"), Path("/bin")):
        for tool in sorted(folder.iterdir()) if folder.is_dir() else []:
            link = path / tool.name
            if tool.name not in SLURM_COMMANDS and not link.exists() and os.access(tool, os.X_OK):
                link.symlink_to(tool)
    assert shutil.which("sh", path=path) and shutil.which("srun", path=path) is None
    out = run_sweep(
        tmp_path, data_dir, tmp_path / "sweep", launcher="slurm", tiny=(), env={"PATH": str(path)}
    )
    assert_one_line_error(
        out, "this machine has no srun", "hydra/launcher=slurm_local", "SLURM login node"
    )
    assert not (tmp_path / "sweep").exists()


def test_more_nodes_than_anyone_starts_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    env = {name: "" for name in ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID")}
    clean = {k: v for k, v in os.environ.items() if k not in env and not k.startswith("SLURM")}
    run_dir = tmp_path / "run"
    out = run_cli(
        "train",
        "trainer=ddp_cpu",
        "trainer.devices=2",
        "trainer.num_nodes=2",
        *tiny_cli(tmp_path, data_dir),
        f"hydra.run.dir={run_dir}",
        env=clean,
        timeout=120,
    )
    assert_one_line_error(
        out, "trainer.num_nodes=2 but nothing starts the other nodes", "torchrun --nnodes=2"
    )
    assert not run_dir.exists()


def test_ddp_job_under_the_submitit_launcher_starts_its_ranks_as_lmtrain(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "sweep"
    ddp = ("trainer=ddp_cpu", "trainer.devices=2")
    out = run_sweep(tmp_path, data_dir, sweep, *ddp, launcher="slurm_local", timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert metrics["tokens_seen"] == 2 * 2 * 8 * 32  # steps x ranks x batch x block


class TermInFinalValidation(Callback):
    """Sends this process SIGTERM at the first batch of the validation after training."""

    def on_validation_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, *args: object
    ) -> None:
        if trainer.state.fn == "validate":
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_outside_the_training_steps_names_the_run_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    run_dir = tmp_path / "run"
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv"),
        f"+callbacks.term._target_={__name__}.TermInFinalValidation",
        f"hydra.run.dir={run_dir}",
    )
    assert out.returncode == 128 + signal.SIGTERM, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "error: terminated by SIGTERM outside the training steps: nothing was saved after the "
        f"last checkpoint; resume with ckpt_path=last hydra.run.dir={run_dir}"
    )
