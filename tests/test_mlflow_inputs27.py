"""MLflow inputs a red team (log27) found refused only at MLflow's first request, in a line that
blamed the store or server ("check that the server runs") and named no key, after the experiment
was created in the store:

- a list or a mapping as a `logger.mlflow.tags` value (`tags.authors=[alice,bob]`);
- a number as `logger.mlflow.experiment_name` (`2024`), and an empty one (`''`), which is now
  the task name, as null is (an empty `logger.mlflow.run_name` is null too).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmtrain.utils.logger_runs import MLFLOW_RUN_ID_FILE
from tests.helpers.assertions import assert_one_line_error, refusal
from tests.helpers.cli import run_cli, tiny_cli


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own MLflow store, not a server of the developer's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (
            "++logger.mlflow.tags.authors=[alice,bob]",
            ["logger.mlflow.tags.authors=['alice', 'bob'] is not text", 'authors="alice,bob"'],
        ),
        (
            "++logger.mlflow.tags={a:{b:1}}",
            ["logger.mlflow.tags.a={'b': 1} is not text", 'tags.a="b:1"'],
        ),
        (
            "logger.mlflow.experiment_name=2024",
            ["logger.mlflow.experiment_name=2024 is not text", "quote it"],
        ),
    ],
)
def test_a_tag_or_experiment_name_mlflow_refuses_is_one_line_before_the_store(
    tmp_path: Path, data_dir: Path, override: str, fragments: list[str]
) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=mlflow", f"hydra.run.dir={tmp_path / 'run'}")
    out = run_cli("train", *cli, override, "trainer.max_steps=2")
    line = assert_one_line_error(out, *fragments)
    assert "server" not in line, line
    # Refused before MLflow was touched: no store, so no experiment left in one.
    assert not (tmp_path / "logs" / "mlflow").exists()


def test_an_empty_experiment_name_is_the_task_name_and_tags_become_text(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=mlflow", f"hydra.run.dir={run}")
    given = ("logger.mlflow.experiment_name=''", "++logger.mlflow.tags.team=5")
    out = run_cli("train", *cli, *given, "++logger.mlflow.tags.tags=null", "task_name=tiny-task")
    assert out.returncode == 0, out.stderr[-3000:]
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    logged = store.get_run((run / MLFLOW_RUN_ID_FILE).read_text().strip())
    assert store.get_experiment(logged.info.experiment_id).name == "tiny-task"
    assert logged.data.tags["team"] == "5"
    assert logged.data.tags["tags"] == ""  # null: an empty text, as MLflow takes
    assert logged.data.tags["run_dir"] == str(run)


@pytest.mark.parametrize("name", ["a@b", "/lead", "a/../b"])
def test_a_tag_name_mlflow_refuses_is_named(name: str) -> None:
    from lmtrain.utils.logger_checks import mlflow_tags

    message = refusal(lambda: mlflow_tags("logger.mlflow.tags", {name: "x"}))
    assert message.startswith(f"logger.mlflow.tags.{name} is not a tag name MLflow takes")


def test_a_too_long_experiment_name_is_refused() -> None:
    from lmtrain.utils.logger_checks import mlflow_experiment_name

    key = "logger.mlflow.experiment_name"
    message = refusal(lambda: mlflow_experiment_name(key, "x" * 501, "task"))
    assert f"{key} has 501 characters" in message


def test_the_checks_need_no_mlflow_where_the_loggers_extra_is_missing(monkeypatch) -> None:
    """mlflow is optional (the `loggers` extra): without it the text checks still run and
    nothing raises ModuleNotFoundError (MLFlowLogger names what is missing, in one line)."""
    from lmtrain.utils.logger_checks import mlflow_entry_problem

    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails, as uninstalled
    problem = mlflow_entry_problem("logger.mlflow", {"tags": {"authors": ["a", "b"]}})
    assert problem is not None and problem.startswith("logger.mlflow.tags.authors=['a', 'b'] is")
    assert mlflow_entry_problem("logger.mlflow", {"tags": {"team": "nlp"}}) is None
