"""Sweep inputs that Hydra's sweepers ran without a word, other than asked, or ended with a
traceback (utils/sweep_checks.py, called by SweepOutcome before any job).

A tag the Optuna sweeper does not read (`tag(lgo, ...)`, `tag(int, ...)`, `log` on a range)
searched a linear scale and exited 0; `range(1,1)` ran every Optuna trial with lr=1 and
launched no job of a grid, both exiting 0; `n_trials=0` (or `n_jobs=0`) ended in a traceback.
Each is one `error:` line, from the command line and from a config's `hydra.sweeper.params`,
and no sweep folder is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_LLAMA, TINY_RUN
from tests.helpers.corpora import one_file_corpus

pytestmark = pytest.mark.filterwarnings("ignore")

# An Optuna search of one trial: on the old code each of these searches ran (and exited 0).
OPTUNA = ("hparams_search=optuna", "hydra.sweeper.n_trials=1")


def refused(tmp_path: Path, data_dir: Path, *overrides: str, fragments: tuple[str, ...]) -> None:
    """Run `overrides` (first: `-m` leads) as a tiny sweep into tmp_path/sweep: one error line
    holding every fragment, and no sweep folder."""
    sweep = tmp_path / "sweep"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    out = run_cli("train", *overrides, *cli, f"hydra.sweep.dir={sweep}")
    assert_one_line_error(out, *fragments)
    assert not sweep.exists()


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        (
            "model.optimizer.lr=tag(lgo, interval(1e-4, 1e-2))",
            (
                "the search space model.optimizer.lr=tag(lgo, interval(1e-4, 1e-2)) has the tag "
                "lgo, which the Optuna sweeper ignores (its only tag: log, on interval())",
            ),
        ),
        (
            "hydra.sweeper.params={model.optimizer.lr:'tag(lgo, interval(1e-4, 1e-2))'}",
            ("hydra.sweeper.params.model.optimizer.lr=tag(lgo, interval(1e-4, 1e-2))", "lgo"),
        ),
        (
            "model.scheduler.num_warmup_steps=tag(int, interval(0, 200))",
            ("the tag int,", "int(interval(low, high)) for integers"),
        ),
        (
            "model.scheduler.num_warmup_steps=tag(log, range(1, 200))",
            ("tag(log, range(1, 200)) has the tag log", "ignores on range()"),
        ),
    ],
)
def test_a_tag_the_optuna_sweeper_ignores_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, fragments: tuple[str, ...]
) -> None:
    refused(tmp_path, data_dir, *OPTUNA, space, fragments=fragments)


def test_a_misspelt_tag_in_a_search_config_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """A copy of configs/hparams_search/optuna.yaml with its log tag misspelt."""
    configs = tmp_path / "configs" / "hparams_search"
    configs.mkdir(parents=True)
    (configs / "misspelt.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - optuna\n  - _self_\n"
        "hydra:\n  sweeper:\n    params:\n"
        "      model.optimizer.lr: tag(lgo, interval(1e-4, 1e-2))\n"
    )
    search = f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    refused(
        tmp_path,
        data_dir,
        search,
        "hparams_search=misspelt",
        "hydra.sweeper.n_trials=1",
        fragments=("hydra.sweeper.params.model.optimizer.lr=tag(lgo, interval(1e-4, 1e-2))",),
    )


@pytest.mark.parametrize("space", ["range(1,1)", "range(5,1)", "range(0.5,0.1,0.1)"])
@pytest.mark.parametrize("search", [OPTUNA, ("-m",)], ids=["optuna", "grid"])
def test_a_range_without_values_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, search: tuple[str, ...]
) -> None:
    refused(
        tmp_path,
        data_dir,
        *search,
        f"model.optimizer.lr={space}",
        fragments=(f"the sweep model.optimizer.lr={space} has no values",),
    )


@pytest.mark.parametrize("search", [OPTUNA, ("-m",)], ids=["optuna", "grid"])
def test_a_range_with_a_step_of_0_is_one_line(
    tmp_path: Path, data_dir: Path, search: tuple[str, ...]
) -> None:
    """The basic sweeper ended in Python's `range() arg 3 must not be zero`, a traceback."""
    space = "model.scheduler.num_warmup_steps=range(1,3,0)"
    refused(tmp_path, data_dir, *search, space, fragments=(f"the sweep {space} has a step of 0",))


@pytest.mark.parametrize("search", [OPTUNA, ("-m", "model.config.n_embd=32,64")])
def test_a_search_over_a_key_the_model_does_not_have_is_refused_before_any_trial(
    tmp_path: Path, data_dir: Path, search: tuple[str, ...]
) -> None:
    """The generic search space is GPT-2's: with a Llama model, trial 0 failed in Hydra's words,
    advising `+model.config.n_embd`, which Llama takes without a word (red team rev_sweep)."""
    corpus = one_file_corpus(tmp_path / "corpus")
    sweep = tmp_path / "sweep"
    llama = [*TINY_LLAMA, *TINY_RUN, "data=text_files", "data.tokenizer.kind=char"]
    paths = [f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}"]
    out = run_cli(
        "train",
        *search,
        *llama,
        f"data.source.path={corpus}",
        *paths,
        f"hydra.sweep.dir={sweep}",
    )
    assert_one_line_error(
        out,
        "names model.config.n_embd, which this run's config does not have (model.config has "
        "num_hidden_layers,",
        "the keys of the model you train",
    )
    assert not sweep.exists()


def test_a_sweep_dir_that_is_a_file_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """Hydra's makedirs ended in FileExistsError, a traceback; the file is left as it was."""
    file = tmp_path / "afile"
    file.write_text("mine\n")
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    out = run_cli("train", "-m", "seed=1,2", *cli, f"hydra.sweep.dir={file}")
    assert_one_line_error(out, f"hydra.sweep.dir={file} is a file, not a folder")
    assert file.read_text() == "mine\n"


@pytest.mark.parametrize("setting", ["n_trials=0", "n_trials=-1", "n_jobs=0"])
def test_an_optuna_search_of_no_trials_is_one_line(
    tmp_path: Path, data_dir: Path, setting: str
) -> None:
    key = setting.split("=")[0]
    refused(
        tmp_path,
        data_dir,
        "hparams_search=optuna",
        f"hydra.sweeper.{setting}",
        fragments=(f"hydra.sweeper.{setting}", f"give hydra.sweeper.{key} of 1 or more"),
    )


def test_a_grid_from_the_command_line_runs_or_gets_hydras_hint(
    tmp_path: Path, data_dir: Path
) -> None:
    """The basic sweeper's `params` was null, and OmegaConf cannot merge a mapping into null:
    `hydra.sweeper.params={...}` ended in an AttributeError traceback. Now it is Hydra's
    one message with its `+` hint, and the `+` form runs the grid."""
    sweep = tmp_path / "sweep"
    cli = [*tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")]
    cli += ["callbacks.text_samples=null", f"hydra.sweep.dir={sweep}"]
    grid = "{model.optimizer.lr: '1e-3,2e-3'}"
    out = run_cli("train", "-m", *cli, f"hydra.sweeper.params={grid}")
    assert out.returncode != 0
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]
    assert f"+hydra.sweeper.params={grid}" in out.stderr, out.stderr[-2000:]
    assert not sweep.exists()

    out = run_cli("train", "-m", *cli, f"+hydra.sweeper.params={grid}")
    assert out.returncode == 0, out.stderr[-3000:]
    lrs = [
        yaml.safe_load((sweep / str(job) / ".hydra" / "config.yaml").read_text())["model"][
            "optimizer"
        ]["lr"]
        for job in (0, 1)
    ]
    assert lrs == [1e-3, 2e-3]


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (
            ("hydra.sweeper.direction=maximize",),
            (
                "minimizes, and this search asks it to maximize, which Optuna cannot change",
                "pass hydra.sweeper.direction=minimize to go on with it",
            ),
        ),
        (
            ("model.optimizer.lr=interval(1e-4, 1e-2)",),
            (
                "searched model.optimizer.lr as LogUniformDistribution(high=0.01, low=0.0001), "
                "and this search asks for UniformDistribution(high=0.01, low=0.0001)",
                "search model.optimizer.lr as before",
            ),
        ),
        (
            ("model.optimizer.weight_decay=choice(0.0, 0.1)",),
            ("searched model.optimizer.weight_decay as UniformDistribution(high=0.2, low=0.0)",),
        ),
    ],
)
def test_a_search_that_its_stored_study_cannot_continue_is_one_line(
    change: tuple[str, ...], fragments: tuple[str, ...], tmp_path: Path, data_dir: Path
) -> None:
    """hydra.sweeper.storage keeps the study; Optuna refused another direction with a traceback,
    and another kind of distribution at the first trial, its job folder made."""
    import optuna
    from optuna.distributions import LogUniformDistribution, UniformDistribution

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="train", storage=storage, direction="minimize")
    space = {
        "model.optimizer.lr": LogUniformDistribution(1e-4, 1e-2),
        "model.optimizer.weight_decay": UniformDistribution(0.0, 0.2),
    }
    params = {"model.optimizer.lr": 1e-3, "model.optimizer.weight_decay": 0.1}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=2.5))
    storage_line = f"hydra.sweeper.storage={storage}"
    refused(tmp_path, data_dir, *OPTUNA, storage_line, *change, fragments=fragments)


def test_a_damaged_stored_study_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """A trial whose stored distribution Optuna cannot rebuild: its traceback came from inside
    the sweeper."""
    import sqlite3

    import optuna
    from optuna.distributions import LogUniformDistribution

    db = tmp_path / "optuna.db"
    study = optuna.create_study(study_name="train", storage=f"sqlite:///{db}")
    space = {"model.optimizer.lr": LogUniformDistribution(1e-4, 1e-2)}
    params = {"model.optimizer.lr": 1e-3}
    study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=2.5))
    with sqlite3.connect(db) as connection:
        damaged = '{"name": "LogUniformDistribution", "attributes": {"lowx": 1}}'
        connection.execute("UPDATE trial_params SET distribution_json = ?", (damaged,))
    refused(
        tmp_path, data_dir, *OPTUNA, f"hydra.sweeper.storage=sqlite:///{db}",
        fragments=(f"study 'train' in hydra.sweeper.storage=sqlite:///{db} cannot be read",
                   "another hydra.sweeper.study_name"),
    )  # fmt: skip


def test_a_sweep_folder_a_live_sweep_holds_is_refused(tmp_path: Path, data_dir: Path) -> None:
    """Two sweeps started together into one folder both passed the check for another sweep's
    jobs (none yet), then wrote over each other's job records: the folder is locked for a
    sweep's life. Here this test process holds it, as a sweep that has just started does."""
    from lmtrain.utils import locks

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    release = locks.acquire(sweep / ".lock")
    try:
        cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
        out = run_cli("train", "-m", "seed=1,2", *cli, f"hydra.sweep.dir={sweep}")
        assert_one_line_error(out, f"hydra.sweep.dir={sweep} is in use by a live sweep (pid ")
        assert sorted(p.name for p in sweep.iterdir()) == [".lock"]  # no job, no ledger
    finally:
        release()
    out = run_cli("train", "-m", "seed=1,2", *cli, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file() and (sweep / "1" / "metrics.json").is_file()
