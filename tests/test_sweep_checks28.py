"""Sweep kinds the sweeper in use cannot run, refused before any job (red team sweep28;
utils/sweep_kinds.py and utils/sweep_checks.py, called by SweepOutcome).

An interval() in a grid sweep ended in Hydra's "BasicSweeper does not support sweep type"
traceback and left a sweep folder; a glob() in an Optuna search broke lmtrain's own check with
the plugin's bare AssertionError, then traced back in the plugin; a glob() that matched no
option launched 0 jobs and exited 0, leaving an empty sweep folder that `make report` took for
the newest sweep. Each is now one `error:` line, and no sweep folder is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.sweep_checks import refuse_empty_search_ranges
from tests.helpers.cli import run_cli, tiny_cli
from tests.test_sweep_inputs import OPTUNA, refused

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize(
    ("space", "shown"),
    [
        ("model.optimizer.lr=interval(1e-4,1e-3)", "model.optimizer.lr=interval(1e-4,1e-3)"),
        (
            "model.optimizer.lr=tag(log,interval(1e-4,1e-3))",
            "model.optimizer.lr=tag(log,interval(1e-4,1e-3))",
        ),
        (
            "+hydra.sweeper.params={model.optimizer.lr: 'interval(1e-4,1e-3)'}",
            "hydra.sweeper.params.model.optimizer.lr=interval(1e-4,1e-3)",
        ),
    ],
)
def test_an_interval_in_a_grid_sweep_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, shown: str
) -> None:
    refused(
        tmp_path,
        data_dir,
        "-m",
        space,
        fragments=(f"{shown} needs hparams_search=optuna", "for a grid give a comma list"),
    )


@pytest.mark.parametrize(
    ("space", "listed"),
    [("model=glob(gpt2_t*)", "choice(gpt2_tiny)"), ("model=glob(lama*)", "choice(a, b, ...)")],
)
def test_a_glob_in_an_optuna_search_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, listed: str
) -> None:
    refused(
        tmp_path,
        data_dir,
        *OPTUNA,
        space,
        fragments=(
            f"the search space {space} is a glob(), which the Optuna sweeper cannot search",
            f"list the options with {listed}",
            "llama_tiny",  # the group's options
        ),
    )


def test_what_the_optuna_plugin_asserts_is_one_line() -> None:
    """The plugin's builder asserts where it meets what it cannot build (a glob() here): the
    check that calls it says so in one line, not a bare AssertionError that skipped the checks
    after it and let the sweep trace back."""
    with pytest.raises(LMTrainError, match=r"model=glob\(gpt2\*\) is not one the Optuna sweeper"):
        refuse_empty_search_ranges({"model=glob(gpt2*)": ""})


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        ("model=glob(lama*)", ("matches no option", "(model has ", "llama_tiny")),
        ("model=glob(*,exclude=[*])", ("matches no option", "llama_tiny")),
        ("seed=glob(*)", ("seed is not a config group", "give a comma list")),
    ],
)
def test_a_glob_that_matches_nothing_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, fragments: tuple[str, ...]
) -> None:
    refused(tmp_path, data_dir, "-m", space, fragments=(f"the sweep {space} ", *fragments))


def test_a_glob_that_matches_runs_its_grid(tmp_path: Path, data_dir: Path) -> None:
    """The refusals leave a glob that names options alone: it runs a job per option."""
    sweep = tmp_path / "sweep"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    out = run_cli("train", "-m", "model=glob(gpt2_t*)", *cli, f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (sweep / "0" / "metrics.json").is_file()
    assert not (sweep / "1").exists()


def test_a_grid_sweep_over_a_key_the_config_lacks_is_told_of_its_sweep(
    tmp_path: Path, data_dir: Path
) -> None:
    """The line spoke of Optuna's search space and hparams_search/optuna.yaml in a grid sweep."""
    refused(
        tmp_path,
        data_dir,
        "-m",
        "model.config.n_embdd=32,64",
        fragments=(
            "the sweep model.config.n_embdd=32,64 names model.config.n_embdd, which this run's "
            "config does not have (model.config has ",
            "sweep the keys of the model you train (check the spelling)",
        ),
    )


def test_a_misspelt_optimized_metric_is_one_line_before_any_job(
    tmp_path: Path, data_dir: Path
) -> None:
    """Each job refused it after starting (under SLURM, after queueing): the sweep ended with
    one line per job (red team sweep28, LOW 4)."""
    refused(
        tmp_path,
        data_dir,
        "-m",
        "optimized_metric=val/lsos",
        "seed=1,2",
        fragments=(
            "optimized_metric='val/lsos' is not a metric lmtrain logs: did you mean val/loss?",
        ),
    )
