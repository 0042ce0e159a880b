"""Promises of the docs that red team rev_docs29 found broken: the report's curves from a
relative sweep path, and the fix a `train_time_interval` refusal prints, typed as printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from lmtrain.utils.sweep_curves import read_curve
from tests.helpers.cli import train_csv_run
from tests.helpers.corpora import one_file_corpus


def test_a_relative_job_path_reads_the_csv_curve_from_another_folder(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run's csv save_dir is relative to the folder it was launched from (the checkout):
    # a relative job path was joined to that folder, and the report found no curve there.
    corpus = one_file_corpus(tmp_path / "corpus")
    run = train_csv_run(tmp_path, data_dir, corpus, "job")
    assert (run / "csv" / "metrics.csv").is_file()
    monkeypatch.chdir(tmp_path)
    curve = read_curve(Path("job"), frozenset({"csv"}))
    assert curve and all(step >= 0 and loss > 0 for step, loss in curve), curve


def test_the_train_time_interval_fix_passes_as_printed(compose_cfg) -> None:
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg("+callbacks.model_checkpoint.train_time_interval=30"))
    fix = re.search(r"pass one as '([^']+)'", str(err.value))
    assert fix is not None, str(err.value)
    # Hydra refused the printed fix without its `+` ("not in struct"); `++` also sets a key
    # that a user's callbacks config already has.
    check_train_config(compose_cfg(fix.group(1)))
    check_train_config(
        compose_cfg("+callbacks.model_checkpoint.train_time_interval=null", fix.group(1))
    )
