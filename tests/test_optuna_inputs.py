"""Optuna search settings that Hydra's Optuna sweeper ended with a traceback, or ran other than
asked without a word (utils/sweep_checks.py, utils/optuna_study.py, utils/sweep_overrides.py,
called by SweepOutcome before any trial), and an earlier search's results that an
`overwrite_run=true` sweep replaced (utils/sweep_outcome.py).

A misspelt direction, a max_failure_rate outside 0-1 and a storage that cannot be opened traced
back, the last two after the sweep's folder and ledger were made; the grid sampler left out an
int interval's top value and traced back on a float one; a swept config group whose option lacks
a searched key ended the study at that option's first trial. Each is one `error:` line, and no
sweep folder is made.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.optuna_study import refuse_unusable_storage
from tests.test_sweep_inputs import OPTUNA, refused

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.mark.parametrize(
    ("setting", "fragments"),
    [
        (
            "hydra.sweeper.direction=minimise",
            (
                "hydra.sweeper.direction=minimise is not a direction Optuna knows",
                "pass hydra.sweeper.direction=minimize",
            ),
        ),
        ("hydra.sweeper.direction=[Maximize]", ("hydra.sweeper.direction=Maximize is not",)),
        (
            "hydra.sweeper.max_failure_rate=2",
            (
                "hydra.sweeper.max_failure_rate=2 is not a share of trials",
                "give one from 0",
            ),
        ),
        ("hydra.sweeper.max_failure_rate=-1", ("hydra.sweeper.max_failure_rate=-1 is not",)),
    ],
)
def test_a_direction_or_failure_rate_optuna_refuses_is_one_line(
    tmp_path: Path, data_dir: Path, setting: str, fragments: tuple[str, ...]
) -> None:
    """Optuna's ValueError ("Please set either 'minimize' or 'maximize'"), and the sweeper's
    bare AssertionError when Hydra built it, left .jobs/ and .lock in the sweep folder."""
    refused(tmp_path, data_dir, *OPTUNA, setting, fragments=fragments)


@pytest.mark.parametrize("storage", ["missing folder", "unknown scheme", "text file"])
def test_a_storage_that_cannot_be_opened_is_one_line(
    tmp_path: Path, data_dir: Path, storage: str
) -> None:
    """SQLAlchemy's traceback ("unable to open database file", NoSuchModuleError, "file is not
    a database") came from inside the sweeper; a user's file is left as it was."""
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    url, what = {
        "missing folder": (f"sqlite:///{tmp_path / 'nowhere' / 'optuna.db'}", "does not exist"),
        "unknown scheme": ("foo://x", "NoSuchModuleError"),
        "text file": (f"sqlite:///{notes}", "is not an SQLite database"),
    }[storage]
    fragments = (f"hydra.sweeper.storage={url} cannot be used (", what)
    refused(tmp_path, data_dir, *OPTUNA, f"hydra.sweeper.storage={url}", fragments=fragments)
    assert notes.read_text() == "mine\n"
    assert not (tmp_path / "nowhere").exists()


def test_a_server_storage_line_masks_its_password_and_names_the_missing_driver() -> None:
    """The line showed postgresql://u:secretpw@... and advised sqlite for a driver not
    installed (rev_diff14)."""
    with pytest.raises(LMTrainError) as refused_storage:
        refuse_unusable_storage("postgresql+pg8000://u:secretpw@localhost/db")
    line = str(refused_storage.value)
    assert "secretpw" not in line
    assert line.startswith("hydra.sweeper.storage=postgresql+pg8000://u:***@localhost/db cannot be")
    assert line.endswith("): install pg8000"), line


@pytest.mark.parametrize(
    ("space", "fragments"),
    [
        (
            "int(interval(0, 2))",
            (
                "num_warmup_steps=int(interval(0, 2)) is an interval, and the grid sampler",
                "leaves out its top value, 2",
                "model.scheduler.num_warmup_steps=choice(0, 1, 2)",
            ),
        ),
        ("interval(0.0, 0.2)", ("takes no continuous range", "=choice(0.0, 0.05, 0.1,")),
    ],
    ids=["int", "float"],
)
def test_an_interval_on_the_grid_sampler_is_one_line(
    tmp_path: Path, data_dir: Path, space: str, fragments: tuple[str, ...]
) -> None:
    """The plugin's grid of int(interval(0, 2)) was range(2): 2 was never tried; a float
    interval ended in "GridSampler only supports discrete distributions"."""
    configs = tmp_path / "configs" / "hparams_search"
    configs.mkdir(parents=True)
    (configs / "grid.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n"
        "  - override /hydra/sweeper: optuna\n"
        "  - override /hydra/sweeper/sampler: grid\n"
        "optimized_metric: val/loss\n"
        "hydra:\n  mode: MULTIRUN\n  sweeper:\n    n_trials: 10\n"
        f"    params:\n      model.scheduler.num_warmup_steps: {space}\n"
    )
    search = (f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "hparams_search=grid")
    refused(tmp_path, data_dir, *search, fragments=fragments)


def test_a_searched_key_an_option_of_a_swept_group_lacks_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """Muon's config has no model.optimizer.lr: the study died at the first muon trial, in
    Hydra's words, after the adamw trials had trained (no results file, the ledger not ended)."""
    refused(
        tmp_path,
        data_dir,
        *OPTUNA,
        "model/optimizer=choice(adamw,muon)",
        fragments=(
            "names model.optimizer.lr, which the jobs of model/optimizer=muon do not have "
            "(model.optimizer has _target_, muon, adamw)",
        ),
    )


def test_an_overwrite_sweep_removes_the_results_of_the_search_it_replaced(
    tmp_path: Path,
) -> None:
    """A grid sweep with overwrite_run=true into an Optuna search's folder replaced its jobs and
    kept its optimization_results.yaml, whose best trial named them. Without overwrite_run the
    folder is refused before any job (test_sweep_folders), and a results file stays."""
    from lmtrain.utils.sweep_checks import file_stamp, sweep_files
    from lmtrain.utils.sweep_ledger import start_ledger
    from lmtrain.utils.sweep_outcome import SweepOutcome

    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)
    (sweep / "0" / ".hydra" / "config.yaml").write_text("seed: 1\n")
    results = sweep / "optimization_results.yaml"
    for overwrite in (False, True):
        results.write_text("name: optuna\nbest_params: {seed: 1}\nbest_value: 2.5\n")
        outcome = SweepOutcome()
        outcome.before = {path: file_stamp(path) for path in sweep_files(sweep)}
        start_ledger(sweep)  # as SweepOutcome.claim does; the grid's jobs then run
        config = {"hydra": {"sweep": {"dir": str(sweep)}}, "overwrite_run": overwrite}
        outcome.on_multirun_end(OmegaConf.create(config))
        assert results.is_file() is not overwrite
