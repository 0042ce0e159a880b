"""Logger inputs a red team (log23) found taken as something else, or failing late:

- a `wandb_run_id` or `mlflow_run_id` file holding bytes that are not UTF-8 text: W&B logged
  under the made-up id `\\ufffd\\ufffd`, MLflow's refusal was a UnicodeDecodeError traceback;
- `logger.csv.name=../../esc` (or a TensorBoard `version`) wrote the run's files beside the
  task's run folders, and the next such run's refusal named `logger.csv.save_dir`;
- `logger.wandb.name=""` made an unnamed W&B run (null names it after the task);
- a sweep over a secret-named key gave every job one name, `+extra.hf_token=<redacted>`;
- `logger.wandb.entity=bad/ent` was taken (a project with a `/` is refused).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.utils import tracker_ids, wandb_run
from lmtrain.utils.logger_runs import MLFLOW_RUN_ID_FILE
from lmtrain.utils.outside_records import refuse_replacing_outside_records
from lmtrain.utils.sweep_job_names import SweepJob
from lmtrain.utils.wandb_run import RUN_ID_FILE, run_id
from tests.helpers.assertions import assert_one_line_error, refusal
from tests.helpers.cli import inspect_session, run_cli, run_sweep, tiny_cli

NOT_UTF8 = b"\xff\xfe\n"
EVENTS = "TensorBoard events"
JOB_NAMES = ["+extra.hf_token=<redacted> (job 0)", "+extra.hf_token=<redacted> (job 1)"]


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's own MLflow store, not a server of the developer's."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """(root, run folder) of a finished 2-step run that logged to W&B and MLflow."""
    root = tmp_path_factory.mktemp("finished")
    run = root / "run"
    cli = tiny_cli(root, data_dir, "logger=[wandb,mlflow]", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (run / RUN_ID_FILE).is_file() and (run / MLFLOW_RUN_ID_FILE).is_file()
    return root, run


def wandb_run_records(run_dir: Path) -> list[dict]:
    """The `run` record of each offline W&B session under `run_dir/wandb`."""
    found = []
    for session in sorted((run_dir / "wandb").glob("offline-run-*")):
        records = map(json.loads, inspect_session(session, "--json").splitlines())
        found.append(next(r["run"] for r in records if r.get("type") == "run"))
    return found


@pytest.mark.parametrize(
    ("logger", "id_file"), [("wandb", RUN_ID_FILE), ("mlflow", "mlflow_run_id")]
)
def test_a_run_id_file_that_is_not_utf8_text_is_refused_in_one_line_on_resume(
    finished: tuple[Path, Path], tmp_path: Path, data_dir: Path, logger: str, id_file: str
) -> None:
    root, original = finished
    run = tmp_path / "run"
    shutil.copytree(original, run)
    (run / id_file).write_bytes(NOT_UTF8)
    (run / f"{id_file}.folder").unlink()  # the copy is this folder's own, not a copy's
    cli = tiny_cli(root, data_dir, f"logger={logger}", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "ckpt_path=last", "trainer.max_steps=3")
    service = "W&B" if logger == "wandb" else "MLflow"
    assert_one_line_error(
        out,
        f"{run / id_file} holds bytes that are not UTF-8 text",
        f"not a {service} run id: delete the file to start a new {service} run",
    )
    assert (run / id_file).read_bytes() == NOT_UTF8
    sessions = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert sessions == sorted(p.name for p in (original / "wandb").glob("offline-run-*"))


def test_a_saved_replacement_character_is_no_run_id_and_compares_unequal(tmp_path: Path) -> None:
    """A file that holds U+FFFD itself (a garbled id saved as UTF-8) is refused too; where ids
    are only compared (another job's, a copied folder's), bytes that are no text match none."""
    (tmp_path / RUN_ID_FILE).write_text("\ufffd\ufffd\n", encoding="utf-8")
    message = refusal(lambda: run_id(tmp_path, None, resuming=True))
    assert "which is not a W&B run id" in message
    (tmp_path / "other").write_bytes(NOT_UTF8)
    assert tracker_ids.saved_text(tmp_path / "other") is None


@pytest.mark.parametrize(
    ("loggers", "setting", "what", "escaped"),
    [
        ("logger=csv", "logger.csv.name=../../esc", "metrics.csv", "esc"),
        ("logger=csv", "logger.csv.version=../../../esc", "metrics.csv", "esc"),
        ("logger=tensorboard", "logger.tensorboard.version=../../../esc", EVENTS, "esc"),
        ("logger=tensorboard", "logger.tensorboard.name={abs}", EVENTS, "abs"),
    ],
)
def test_a_logger_folder_that_leaves_its_save_dir_is_refused_naming_the_key(
    tmp_path: Path, data_dir: Path, loggers: str, setting: str, what: str, escaped: str
) -> None:
    runs = tmp_path / "runs"
    run = runs / "run"  # save_dir is the run folder: ../../esc is tmp_path/esc
    setting = setting.format(abs=tmp_path / "abs")
    cli = tiny_cli(tmp_path, data_dir, loggers, setting, f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "trainer.max_steps=2")
    key, value = setting.split("=", 1)
    assert_one_line_error(
        out,
        f"{key}={value!r} puts this run's {what} in {tmp_path / escaped}, outside "
        f"{key.rsplit('.', 1)[0]}.save_dir={run}",
    )
    assert not (tmp_path / escaped).exists()


def test_the_refusal_to_replace_another_runs_metrics_names_the_setting_that_took_it_there(
    tmp_path: Path,
) -> None:
    """A `name` that is a link out of the run folder to another run's CSV folder: the name put
    the file there, not save_dir (which is the run folder)."""
    other = tmp_path / "other" / "csv"
    other.mkdir(parents=True)
    (other / "metrics.csv").write_text("epoch,step\n0,1\n")
    own = tmp_path / "own"
    own.mkdir()
    (own / "csv").symlink_to(other)
    entry = {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(own)}
    cfg = OmegaConf.create({"logger": {"csv": {**entry, "name": "csv", "version": ""}}})
    message = refusal(lambda: refuse_replacing_outside_records(cfg, own, False, False))
    assert message.startswith(
        f"logger.csv.name puts this run's metrics.csv at {other / 'metrics.csv'}"
    ), message
    cfg.logger.csv.save_dir = str(other.parent)
    message = refusal(lambda: refuse_replacing_outside_records(cfg, own, False, False))
    assert message.startswith("logger.csv.save_dir puts this run's metrics.csv at"), message


def test_an_empty_wandb_name_or_mlflow_run_name_is_as_null(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=[wandb,mlflow]", f"hydra.run.dir={run}")
    empty = ("logger.wandb.name=''", "logger.mlflow.run_name=''")
    out = run_cli("train", *cli, *empty, "trainer.max_steps=1", "task_name=tiny-task")
    assert out.returncode == 0, out.stderr[-3000:]
    (record,) = wandb_run_records(run)
    assert record.get("display_name") == "tiny-task", record
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    mlflow_id = (run / MLFLOW_RUN_ID_FILE).read_text().strip()
    assert store.get_run(mlflow_id).info.run_name == run.name


def test_a_wandb_entity_that_w_and_b_refuses_is_one_line_before_the_run(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=wandb", f"hydra.run.dir={run}")
    out = run_cli("train", *cli, "+logger.wandb.entity=bad/ent", "trainer.max_steps=1")
    assert_one_line_error(
        out, "logger.wandb.entity='bad/ent' is not a W&B entity name (has '/')", "entity=null"
    )
    assert not (run / "wandb").exists() and not (run / RUN_ID_FILE).exists()


@pytest.mark.parametrize("entity", ["a b", "team:x", "a#b", "x" * 129, 123])
def test_other_wandb_entities_refused(entity: object) -> None:
    entry = OmegaConf.create({"wandb": {"entity": entity}}).wandb
    assert "logger.wandb.entity=" in refusal(lambda: wandb_run.check_entity(entry))


@pytest.mark.parametrize("entity", [None, "", "my-team", "user_1"])
def test_wandb_entities_taken(entity: object) -> None:
    wandb_run.check_entity(OmegaConf.create({"wandb": {"entity": entity}}).wandb)


def test_a_sweep_over_a_secret_names_each_job_apart(tmp_path: Path, data_dir: Path) -> None:
    sweep = tmp_path / "sweep"
    out = run_sweep(
        tmp_path,
        data_dir,
        sweep,
        "+extra.hf_token=secretAAAA1111,secretBBBB2222",
        tiny=("trainer.max_steps=1", "logger=[tensorboard,mlflow]"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    folders = [sorted(p.name for p in (sweep / job / "tensorboard").iterdir()) for job in "01"]
    assert folders == [
        ["+extra.hf_token=<redacted> (job 0)"],
        ["+extra.hf_token=<redacted> (job 1)"],
    ]
    from mlflow.tracking import MlflowClient

    store = MlflowClient(f"sqlite:///{tmp_path / 'logs' / 'mlflow' / 'mlflow.db'}")
    ids = [tracker_ids.saved_text(sweep / job / MLFLOW_RUN_ID_FILE) for job in "01"]
    names = {store.get_run(mlflow_id).info.run_name for mlflow_id in ids}
    assert names == set(JOB_NAMES)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (("seed=2", "+extra.hf_token=x"), "seed=2"),  # the secret is fixed: no number
        (("seed=1", "+extra.hf_token=y"), "seed=1,+extra.hf_token=<redacted> (job 3)"),
    ],
)
def test_a_grid_jobs_name_has_its_number_only_when_a_swept_value_is_redacted(
    tmp_path: Path, overrides: tuple[str, ...], name: str
) -> None:
    swept = "+extra.hf_token=x,y" if "y" in overrides[1] else "+extra.hf_token=x"
    (tmp_path / "multirun.yaml").write_text(
        f'hydra:\n  overrides:\n    task: ["seed=1,2", "{swept}"]\n'
    )
    job = SweepJob(overrides, "", 3, (), False, tmp_path)
    assert job.name("t") == name
