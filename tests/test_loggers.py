"""The loggers: every `logger=` choice, and W&B, CSV, TensorBoard and MLflow in one run, read back
with each tool's own reader (MlflowClient, TensorBoard's EventAccumulator, the csv module,
`wandb leet inspect`): the same metric names, the resolved config with its secrets redacted,
and a sweep's jobs named and grouped.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from lmtrain.errors import LMTrainError, find_cause
from lmtrain.train import train
from lmtrain.utils import logger_runs
from lmtrain.utils.csv_history import ResumableCSVLogger
from lmtrain.utils.instantiate import instantiate_loggers
from lmtrain.utils.redact import REDACTED
from tests.helpers.cli import run_cli, tiny_cli, wandb_records
from tests.helpers.compose import TINY, compose
from tests.helpers.corpora import one_file_corpus

LOGGER_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "logger"
EXPECTED = {
    "none": [],
    "csv": [CSVLogger],
    "wandb": [WandbLogger],
    "mlflow": [MLFlowLogger],
    "tensorboard": [TensorBoardLogger],
    "many": [WandbLogger, CSVLogger, TensorBoardLogger],
}
HF_TOKEN = "abc123xyz"  # a secret of the environment, found anywhere inside a string
PASSWORD = "hunter2-typed-in-a-command"  # a secret by its key's name
LONG_VALUE = "x" * 7000  # over MLflow's 6000 characters for a param


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test logs to its own store, not to a server in the developer's environment. Set, not
    deleted, so that it is undone after the test: a run exports its store as MLFLOW_TRACKING_URI
    (mlflow.set_tracking_uri does), which later tests' CLI runs would inherit."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


def mlflow_store(log_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{log_dir / 'mlflow' / 'mlflow.db'}")


def tensorboard_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    events.Reload()
    return events


def tensorboard_hparams(events: EventAccumulator) -> dict[str, object]:
    """The hyperparameters of a run as TensorBoard's HParams tab reads them."""
    content = events.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


@pytest.mark.parametrize("choice", sorted(p.stem for p in LOGGER_CONFIGS.glob("*.yaml")))
def test_every_logger_choice_composes_into_its_loggers(choice: str, compose_cfg) -> None:
    cfg = compose_cfg(f"logger={choice}")
    loggers = instantiate_loggers(cfg.get("logger"), run_cfg=cfg)
    assert len(loggers) == len(EXPECTED[choice])
    assert all(isinstance(lg, cls) for lg, cls in zip(loggers, EXPECTED[choice], strict=True))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Path]:
    """One tiny run with all four loggers (`logger=[many,mlflow]`), a secret in the environment,
    a secret-named override, a secret inside an innocent value and a 7000-character value."""
    run_dir = tmp_path_factory.mktemp("all-loggers") / "run"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", "")  # as no_mlflow_server does
        env.setenv("HF_TOKEN", HF_TOKEN)
        cfg = compose(
            "train",
            run_dir,
            data_dir,
            *TINY,
            "logger=[many,mlflow]",
            "data=text_files",
            "data.tokenizer.kind=char",
            f"data.source.path={one_file_corpus(run_dir.parent / 'corpus')}",
            f"+extra.password={PASSWORD}",
            "+extra.note=see-${oc.env:HF_TOKEN}",
            f"+extra.long={LONG_VALUE}",
        )
        train(cfg)
    GlobalHydra.instance().clear()
    yield run_dir


def test_every_logger_records_the_same_metric_names(run: Path) -> None:
    mlflow = mlflow_store(run.parent / "logs")
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "train"]
    (mlflow_run,) = mlflow.search_runs([experiment.experiment_id])
    names = set(mlflow_run.data.metrics)
    for name in names:
        history = mlflow.get_metric_history(mlflow_run.info.run_id, name)
        assert history and all(m.step >= 0 for m in history), name
    assert {"train/loss", "val/loss", "val/ppl", "tokens_seen", "epoch"} <= names
    assert len(mlflow.get_metric_history(mlflow_run.info.run_id, "train/loss")) == 4

    tensorboard = tensorboard_events(run / "tensorboard")
    assert set(tensorboard.Tags()["scalars"]) == names  # no hp_metric placeholder
    assert [e.step for e in tensorboard.Scalars("train/loss")] == [0, 1, 2, 3]

    with (run / "csv" / "metrics.csv").open() as f:
        assert set(csv.DictReader(f).fieldnames) - {"step"} == names

    history = [r["history"]["item"] for r in wandb_records(run) if r.get("type") == "history"]
    wandb_names = {name for item in history for name in item}
    # W&B adds its own step and time keys (_step, _runtime, _timestamp), the step axis Lightning
    # defines for it (trainer/global_step) and the text samples' table (samples.*), W&B's alone.
    own = {n for n in wandb_names if n.startswith(("_", "samples.")) or n == "trainer/global_step"}
    assert wandb_names - own == names


def test_mlflow_run_holds_the_redacted_config_named_and_tagged(run: Path) -> None:
    mlflow = mlflow_store(run.parent / "logs")
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "train"]
    (mlflow_run,) = mlflow.search_runs([experiment.experiment_id])
    params = mlflow_run.data.params
    assert params["extra/password"] == REDACTED
    assert params["extra/note"] == REDACTED
    assert params["extra/long"] == LONG_VALUE[:6000]  # MLflow's limit, not Lightning's 250
    assert params["model/config/n_embd"] == "32" and params["trainer/max_steps"] == "4"
    assert int(params["params/total"]) > 0  # parameter counts, as W&B gets them
    assert params["samples/prompts"] == str(["def ", "class "])
    recorded = [*params.values(), *mlflow_run.data.tags.values(), mlflow_run.info.run_name]
    assert not [v for v in recorded if HF_TOKEN in v or PASSWORD in v]
    assert mlflow_run.info.run_name == run.name  # a single run: its folder's name
    assert mlflow_run.data.tags["run_dir"] == str(run)
    assert mlflow_run.data.tags["tags"] == "dev"
    assert "group" not in mlflow_run.data.tags
    assert mlflow_run.info.status == "FINISHED"


def test_tensorboard_hparams_are_the_redacted_config(run: Path) -> None:
    hparams = tensorboard_hparams(tensorboard_events(run / "tensorboard"))
    assert hparams["extra/password"] == REDACTED and hparams["extra/note"] == REDACTED
    assert hparams["model/config/n_embd"] == 32 and hparams["params/total"] > 0
    assert not [v for v in hparams.values() if isinstance(v, str) and HF_TOKEN in v]
    assert "hp_metric" not in tensorboard_events(run / "tensorboard").Tags()["scalars"]


def test_mlflow_takes_any_param_key_and_value(tmp_path: Path) -> None:
    """Keys MLflow refuses as they are (a character it does not allow, over 250 characters) and a
    value over 6000 characters are logged, not a failed run; here into a given tracking URI."""
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    logger = logger_runs.MLFlowLogger(save_dir=str(tmp_path / "unused"), tracking_uri=uri)
    long_key = "k" * 300
    logger.log_hyperparams({"odd": {"a$b": 1, long_key: 2, long_key + "2": 3}, "v": "y" * 7000})
    params = MlflowClient(uri).get_run(logger.run_id).data.params
    assert params.pop("odd/a_b") == "1"
    assert params.pop("v") == "y" * 6000
    assert sorted(params.values()) == ["2", "3"]  # two long keys, cut apart
    assert all(len(k) == 250 and k.startswith("odd/kkk") for k in params)
    assert not (tmp_path / "unused").exists()


def test_mlflow_follows_the_users_tracking_uri_not_a_store_an_earlier_logger_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLFLOW_TRACKING_URI is read per logger: a notebook that sets it after the import is
    followed, and the store a first logger exported (mlflow.set_tracking_uri does) is not taken
    for the user's server by a second logger made in the same process."""
    first = logger_runs.MLFlowLogger(save_dir=str(tmp_path / "first"))
    assert first.experiment is not None  # Lightning exports the store here
    assert os.environ["MLFLOW_TRACKING_URI"] == first.store_uri
    second = logger_runs.MLFlowLogger(save_dir=str(tmp_path / "second"))
    assert second.store_uri == f"sqlite:///{tmp_path / 'second' / 'mlflow.db'}"
    assert second.store_source == "logger.mlflow.save_dir"

    users = f"sqlite:///{tmp_path / 'users.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", users)
    third = logger_runs.MLFlowLogger(save_dir=str(tmp_path / "third"))
    assert (third.store_uri, third.store_source) == (users, "MLFLOW_TRACKING_URI")
    assert not (tmp_path / "third").exists()


def test_resumed_training_goes_on_in_the_same_mlflow_run(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    corpus = one_file_corpus(tmp_path / "corpus")
    logged = [*TINY, "logger=mlflow", "data=text_files", "data.tokenizer.kind=char",
              f"data.source.path={corpus}"]  # fmt: skip
    train(compose("train", run_dir, data_dir, *logged, "trainer.max_steps=2"))
    train(compose("train", run_dir, data_dir, *logged, "ckpt_path=last"))
    GlobalHydra.instance().clear()

    mlflow = mlflow_store(tmp_path / "logs")
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "train"]
    (mlflow_run,) = mlflow.search_runs([experiment.experiment_id])
    assert (run_dir / "mlflow_run_id").read_text().strip() == mlflow_run.info.run_id
    steps = [m.step for m in mlflow.get_metric_history(mlflow_run.info.run_id, "train/loss")]
    assert steps == [0, 1, 2, 3]
    # MLflow keeps a param's first value: the resume's ckpt_path is not logged over it.
    assert mlflow_run.data.params["ckpt_path"] == "None"
    assert mlflow_run.info.status == "FINISHED"


def test_a_new_run_from_another_runs_weights_starts_its_own_mlflow_run(
    tmp_path: Path, data_dir: Path
) -> None:
    """`overwrite_run=true ckpt_path=<another run's checkpoint>` in a folder that held a run is
    a new run: it appended to that run's MLflow (and W&B) run, its steps going backwards."""
    run_dir, other = tmp_path / "run", tmp_path / "other"
    corpus = one_file_corpus(tmp_path / "corpus")
    logged = [*TINY, "logger=mlflow", "data=text_files", "data.tokenizer.kind=char",
              f"data.source.path={corpus}"]  # fmt: skip
    train(compose("train", run_dir, data_dir, *logged))
    first_id = (run_dir / "mlflow_run_id").read_text().strip()
    train(compose("train", other, data_dir, *logged, "trainer.max_steps=2"))
    from_other = f"ckpt_path={other / 'checkpoints' / 'last.ckpt'}"
    train(compose("train", run_dir, data_dir, *logged, "overwrite_run=true", from_other))
    GlobalHydra.instance().clear()

    new_id = (run_dir / "mlflow_run_id").read_text().strip()
    assert new_id != first_id
    mlflow = mlflow_store(tmp_path / "logs")
    steps = {
        run_id: [m.step for m in mlflow.get_metric_history(run_id, "train/loss")]
        for run_id in (first_id, new_id)
    }
    assert steps == {first_id: [0, 1, 2, 3], new_id: [2, 3]}


def test_a_continued_mlflow_run_the_store_lacks_is_one_line(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg("logger=mlflow")
    (tmp_path / "run" / "mlflow_run_id").write_text("0123456789abcdef0123456789abcdef\n")
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg, resuming=True)
    with pytest.raises(LMTrainError) as raised:
        logger.log_hyperparams({"seed": 1})
    message = str(raised.value)
    assert message.startswith("MLflow run 0123456789abcdef0123456789abcdef (from ")
    assert f"delete {tmp_path / 'run' / 'mlflow_run_id'} to start a new MLflow run" in message


def test_a_tracking_uri_or_store_mlflow_cannot_use_is_one_line(compose_cfg, tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    refusals = {
        "logger.mlflow.tracking_uri=htp://host:5000": "MLflow cannot use the tracking URI 'htp://",
        "logger.mlflow.tracking_uri=file:./mlruns": "MLflow cannot use the tracking URI 'file:",
        f"logger.mlflow.save_dir={a_file}/mlflow": f"logger.mlflow.save_dir={a_file}/mlflow can",
    }
    for override, start in refusals.items():
        cfg = compose_cfg("logger=mlflow", override)
        with pytest.raises(Exception) as raised:
            instantiate_loggers(cfg.logger, run_cfg=cfg)
        message = str(find_cause(raised.value, LMTrainError))
        assert message.startswith(start) and "\n" not in message, message
        assert "logger.mlflow.tracking_uri" in message


def test_sweep_jobs_are_named_and_grouped_in_mlflow_and_tensorboard(
    tmp_path: Path, data_dir: Path
) -> None:
    out = run_cli("train", "-m", *tiny_cli(tmp_path, data_dir), "seed=1,2",
                  "logger=[mlflow,tensorboard]", "trainer.max_steps=2")  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    (sweep,) = (tmp_path / "logs" / "train" / "multiruns").iterdir()

    mlflow = mlflow_store(tmp_path / "logs")
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "train"]
    runs = mlflow.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["seed=1", "seed=2"]
    assert {r.data.tags["group"] for r in runs} == {f"train/{sweep.name}"}
    for job, seed in ((0, 1), (1, 2)):
        events = tensorboard_events(sweep / str(job) / "tensorboard" / f"seed={seed}")
        assert [e.step for e in events.Scalars("train/loss")] == [0, 1]
        assert tensorboard_hparams(events)["seed"] == seed


def test_csv_logger_keeps_the_rows_it_is_told_to_and_drops_a_cut_one(tmp_path: Path) -> None:
    """Lightning's CSVLogger deletes an existing metrics.csv; here a resumed run's file starts
    with the first rows of the earlier one (as many as `CSVBatchStarts` finds were written
    before the resumed batch; the kill tests check that count), each as written. Until they
    are, the earlier file is kept aside, whole."""
    first = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    for step in range(6):
        first.log_metrics({"train/loss": 1 / (step + 1), "epoch": step // 3}, step)
    first.log_metrics({"val/loss": 0.123456789}, 5)
    metrics_csv = tmp_path / "csv" / "metrics.csv"
    written = metrics_csv.read_text()
    assert written.splitlines()[1:5] == [
        "0,0,1.0,",
        "0,1,0.5,",
        "0,2,0.3333333333333333,",
        "1,3,0.25,",
    ]
    with metrics_csv.open("a") as f:  # a kill in the middle of the next row
        f.write("0.1428")

    resumed = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    aside = tmp_path / "csv" / "metrics.csv.before-resume"
    assert metrics_csv.is_file() and not aside.exists()  # a run refused now changes nothing
    resumed.log_hyperparams({"lr": 0.1})  # Lightning's writer starts: the file goes aside
    assert not metrics_csv.exists() and aside.read_text() == written + "0.1428"
    resumed.keep_rows(4)  # resumed at step 4
    resumed.log_metrics({"train/loss": 0.25, "epoch": 1}, 4)
    resumed.finalize("success")
    assert not aside.exists()
    assert metrics_csv.read_text().splitlines() == [
        "epoch,step,train/loss",
        "0,0,1.0",
        "0,1,0.5",
        "0,2,0.3333333333333333",
        "1,3,0.25",
        "1,4,0.25",
    ]
    assert resumed.rows_written == 5

    fresh = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    fresh.keep_rows(0)  # a new run: nothing kept, as Lightning's logger
    fresh.log_metrics({"train/loss": 2.0}, 0)
    assert metrics_csv.read_text().splitlines() == ["step,train/loss", "0,2.0"]


def test_a_resumed_run_keeps_its_csv_rows_with_the_csv_folder_elsewhere(
    tmp_path: Path, data_dir: Path
) -> None:
    """`logger.csv.save_dir` outside the run folder: the run resumed from its own last.ckpt
    still keeps the rows logged before the resume (the logger's folder is not the run's)."""
    elsewhere = tmp_path / "csv_logs"
    cli = tiny_cli(
        tmp_path, data_dir, "callbacks.text_samples=null", "logger=csv",
        f"logger.csv.save_dir={elsewhere}", f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    first = run_cli("train", *cli)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics_csv = elsewhere / "csv" / "metrics.csv"
    with metrics_csv.open(newline="") as f:
        before = {row["step"] for row in csv.DictReader(f)}
    resumed = run_cli("train", *cli, "trainer.max_steps=6", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    with metrics_csv.open(newline="") as f:
        after = [int(row["step"]) for row in csv.DictReader(f)]
    assert before <= {str(step) for step in after}, (before, after)
    assert min(after) == 0 and max(after) >= 5, after


def test_a_resume_refused_before_training_keeps_the_runs_hparams_yaml(tmp_path: Path) -> None:
    """Lightning's CSV writer replaces hparams.yaml when the hyperparameters are logged, before
    fit; a resumed run refused when its checkpoint is restored then left the refused config
    there. It now puts the earlier file back unless training started."""
    hparams = tmp_path / "csv" / "hparams.yaml"
    first = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    first.log_hyperparams({"lr": 0.1})
    first.log_metrics({"train/loss": 2.0}, step=0)
    first.finalize("success")
    trained = hparams.read_text()
    refused = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    refused.log_hyperparams({"lr": 0.5})
    assert "0.5" in hparams.read_text()  # Lightning writes it at once
    refused.finalize("failed")
    assert hparams.read_text() == trained
    resumed = ResumableCSVLogger(tmp_path, name="csv", version="", flush_logs_every_n_steps=1)
    resumed.log_hyperparams({"lr": 0.5})
    resumed.training_started = True
    resumed.finalize("success")
    assert "0.5" in hparams.read_text()
