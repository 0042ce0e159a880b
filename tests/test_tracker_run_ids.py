"""The W&B and MLflow run ids a run folder keeps, as given and as copied.

- A copied run folder (`cp -a run1 run1copy`) resumed while the original is there continued the
  original's W&B and MLflow runs: MLflow's history got steps 4, 4, 5, 5 from two branches. Now
  one line before training names both folders and the two ways on; a moved folder goes on.
- A number for an id (`logger.wandb.id=$SLURM_JOB_ID`) was `TypeError: unsupported operand
  type(s) for +: 'int' and 'str'` (W&B) and `expected string or bytes-like object` (MLflow).
- `logger.wandb.id=abc/def` was W&B's refusal at its first use, with advice to set an API key
  or log offline, and the id file left holding `abc/def`.
- A typed `logger.mlflow.run_name` reached MLflow's store unredacted.

W&B is read back with W&B's own reader (`wandb leet inspect`), MLflow with its client.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import wandb
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.instantiate import instantiate_loggers
from lmtrain.utils.logger_runs import MLFLOW_RUN_ID_FILE, mlflow_kwargs
from lmtrain.utils.task import wandb_refusal
from lmtrain.utils.wandb_run import RUN_ID_FILE, run_id
from tests.helpers.assertions import assert_one_line_error, refusal
from tests.helpers.cli import inspect_session, run_cli, tiny_cli, wandb_summary
from tests.helpers.corpora import one_file_corpus

BOTH = "logger=[wandb,mlflow]"
NO_SERVER = {"MLFLOW_TRACKING_URI": ""}  # each test's own store, not a developer's server


@pytest.fixture(autouse=True)
def no_mlflow_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")


def record_of(id_file: Path) -> Path:
    """Where the folder an id file was written in is recorded (lmtrain.utils.tracker_ids)."""
    return id_file.with_name(id_file.name + ".folder")


def mlflow_store(root: Path) -> MlflowClient:
    """The MLflow store of the runs under `root` (tiny_cli's and compose_cfg's logs folder)."""
    return MlflowClient(f"sqlite:///{root / 'logs' / 'mlflow' / 'mlflow.db'}")


def loss_steps(root: Path, mlflow_id: str) -> list[int]:
    return [m.step for m in mlflow_store(root).get_metric_history(mlflow_id, "train/loss")]


def ids(run: Path) -> tuple[str, str]:
    """The (W&B, MLflow) run ids `run` keeps."""
    return (run / RUN_ID_FILE).read_text().strip(), (run / MLFLOW_RUN_ID_FILE).read_text().strip()


def saved_step(run: Path) -> int:
    last = run / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["global_step"]


def train_cli(tmp_path: Path, data_dir: Path, run: Path, *overrides: str) -> list[str]:
    corpus = tmp_path / "corpus" / "corpus.txt"
    if not corpus.is_file():
        one_file_corpus(corpus.parent)
    return ["train", *tiny_cli(tmp_path, data_dir, BOTH, f"hydra.run.dir={run}", *overrides,
                               corpus=corpus)]  # fmt: skip


def test_a_copied_run_folder_resumed_starts_new_tracker_runs_or_continues_on_purpose(
    tmp_path: Path, data_dir: Path
) -> None:
    original, copy = tmp_path / "run1", tmp_path / "run1copy"
    done = run_cli(*train_cli(tmp_path, data_dir, original, "trainer.max_steps=2"), env=NO_SERVER)
    assert done.returncode == 0, done.stderr[-3000:]
    wandb_id, mlflow_id = ids(original)
    shutil.copytree(original, copy, symlinks=True)  # cp -a
    resume = train_cli(tmp_path, data_dir, copy, "trainer.max_steps=4", "ckpt_path=last")

    refused = run_cli(*resume, env=NO_SERVER)
    assert_one_line_error(
        refused,
        f"{copy} is a copy of the run folder {original.resolve()}, whose W&B run {wandb_id} ",
        f"delete {copy / RUN_ID_FILE} to start a new W&B run from the copy, or pass "
        f"logger.wandb.id={wandb_id} to continue that run from the copy on purpose",
    )
    (copy / RUN_ID_FILE).unlink()
    refused = run_cli(*resume, env=NO_SERVER)
    assert_one_line_error(
        refused,
        f"whose MLflow run {mlflow_id} ",
        f"delete {copy / MLFLOW_RUN_ID_FILE} to start a new MLflow run from the copy, or pass "
        f"logger.mlflow.run_id={mlflow_id} to continue",
    )
    assert saved_step(copy) == 2  # refused before training
    assert ids(original) == (wandb_id, mlflow_id) and loss_steps(tmp_path, mlflow_id) == [0, 1]

    (copy / MLFLOW_RUN_ID_FILE).unlink()
    done = run_cli(*resume, env=NO_SERVER)
    assert done.returncode == 0, done.stderr[-3000:]
    copy_wandb, copy_mlflow = ids(copy)
    assert copy_wandb != wandb_id and copy_mlflow != mlflow_id
    assert loss_steps(tmp_path, copy_mlflow) == [2, 3]
    assert loss_steps(tmp_path, mlflow_id) == [0, 1]  # the original's run has no branch in it
    resumed = sorted((copy / "wandb").glob("offline-run-*"))[-1]
    assert json.loads(inspect_session(resumed, "--summary", "--json"))["run_id"] == copy_wandb

    # The original goes on in its own runs; a second copy continues them only when told to.
    done = run_cli(*train_cli(tmp_path, data_dir, original, "trainer.max_steps=4",
                              "ckpt_path=last"), env=NO_SERVER)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert ids(original) == (wandb_id, mlflow_id)
    assert loss_steps(tmp_path, mlflow_id) == [0, 1, 2, 3]
    second = shutil.copytree(original, tmp_path / "run1second", symlinks=True)
    on_purpose = [f"logger.wandb.id={wandb_id}", f"logger.mlflow.run_id={mlflow_id}"]
    done = run_cli(*train_cli(tmp_path, data_dir, second, "trainer.max_steps=5",
                              "ckpt_path=last", *on_purpose), env=NO_SERVER)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert loss_steps(tmp_path, mlflow_id) == [0, 1, 2, 3, 4]
    assert ids(second) == (wandb_id, mlflow_id)


def test_a_moved_run_folder_goes_on_in_its_tracker_runs(tmp_path: Path, data_dir: Path) -> None:
    first, moved = tmp_path / "first", tmp_path / "moved"
    done = run_cli(*train_cli(tmp_path, data_dir, first, "trainer.max_steps=2"), env=NO_SERVER)
    assert done.returncode == 0, done.stderr[-3000:]
    before = ids(first)
    first.rename(moved)
    resume = train_cli(tmp_path, data_dir, moved, "trainer.max_steps=4", "ckpt_path=last")
    done = run_cli(*resume, env=NO_SERVER)
    assert done.returncode == 0, done.stderr[-3000:]
    assert ids(moved) == before
    assert loss_steps(tmp_path, before[1]) == [0, 1, 2, 3]
    for name in (RUN_ID_FILE, MLFLOW_RUN_ID_FILE):  # the record follows the folder
        assert record_of(moved / name).read_text().strip() == str(moved.resolve())


def test_an_id_file_without_a_record_is_this_folders_and_gets_one(tmp_path: Path) -> None:
    """Run folders from before the records: their ids resume as they did, in every copy."""
    original, copy = tmp_path / "run1", tmp_path / "run1copy"
    for folder in (original, copy):
        folder.mkdir()
        (folder / RUN_ID_FILE).write_text("abc123\n")
    assert run_id(copy, None, resuming=True) == "abc123"
    assert record_of(copy / RUN_ID_FILE).read_text().strip() == str(copy.resolve())
    # A record naming a folder whose id file holds another id: this folder's now.
    (original / RUN_ID_FILE).write_text("other\n")
    record_of(copy / RUN_ID_FILE).write_text(f"{original.resolve()}\n")
    assert run_id(copy, None, resuming=True) == "abc123"
    assert record_of(copy / RUN_ID_FILE).read_text().strip() == str(copy.resolve())


def test_a_copied_mlflow_run_id_is_refused_as_it_is_read(tmp_path: Path) -> None:
    original, copy = tmp_path / "run1", tmp_path / "run1copy"
    original.mkdir()
    saved = "0123456789abcdef0123456789abcdef"
    (original / MLFLOW_RUN_ID_FILE).write_text(saved + "\n")
    record_of(original / MLFLOW_RUN_ID_FILE).write_text(f"{original.resolve()}\n")
    shutil.copytree(original, copy)
    entry = OmegaConf.create({"_target_": "lmtrain.utils.logger_runs.MLFlowLogger"})
    run_cfg = OmegaConf.create({"task_name": "train", "paths": {"output_dir": str(copy)}})
    message = refusal(lambda: mlflow_kwargs(entry, run_cfg, resuming=True))
    assert message.startswith(f"{copy} is a copy of the run folder {original.resolve()}, "), message
    assert f"pass logger.mlflow.run_id={saved} to continue that run from the copy" in message
    run_cfg.paths.output_dir = str(original)
    assert mlflow_kwargs(entry, run_cfg, resuming=True)["run_id"] == saved


def test_a_numeric_wandb_id_is_the_runs_id(compose_cfg, tmp_path: Path) -> None:
    """logger.wandb.id=$SLURM_JOB_ID: Hydra reads the digits as a number."""
    cfg = compose_cfg("logger=wandb", "logger.wandb.id=12345")
    assert cfg.logger.wandb.id == 12345
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg)
    try:
        logger.log_metrics({"train/loss": 1.0}, step=0)
    finally:
        wandb.finish()
    run = tmp_path / "run"
    assert (run / RUN_ID_FILE).read_text() == "12345\n"
    assert wandb_summary(run)["run_id"] == "12345"


@pytest.mark.parametrize(
    ("typed", "read"), [("1e3", "1000.0 was read as a float"), ("true", "True was read as a bool")]
)
def test_a_wandb_id_hydra_reads_as_another_value_is_one_line(
    compose_cfg, tmp_path: Path, typed: str, read: str
) -> None:
    """Hydra turned 1e3 into the id "1000.0" and true into "True" without a word (rev_diff14)."""
    cfg = compose_cfg("logger=wandb", f"logger.wandb.id={typed}")
    message = refusal(lambda: instantiate_loggers(cfg.logger, run_cfg=cfg))
    assert message.startswith(f"logger.wandb.id={read}, not as the text typed: quote it"), message
    assert not (tmp_path / "run" / RUN_ID_FILE).exists()


def test_a_numeric_mlflow_run_id_reaches_mlflow_as_text(compose_cfg) -> None:
    cfg = compose_cfg("logger=mlflow", "logger.mlflow.run_id=12345")
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg)
    message = refusal(lambda: logger.log_hyperparams({"seed": 1}))
    assert message.startswith("MLflow run 12345 (from logger.mlflow.run_id) is not in "), message


def test_a_wandb_id_wandb_refuses_is_one_line_before_anything_is_written(
    compose_cfg, tmp_path: Path
) -> None:
    cfg = compose_cfg("logger=wandb", "logger.wandb.id=abc/def")
    message = refusal(lambda: instantiate_loggers(cfg.logger, run_cfg=cfg))
    assert message.startswith("logger.wandb.id='abc/def' is not a W&B run id ("), message
    assert "logger.wandb.id=null for a new id" in message and "WANDB_API_KEY" not in message
    assert not (tmp_path / "run" / RUN_ID_FILE).exists()


def test_only_a_wandb_refusal_of_the_credentials_says_to_set_a_key_or_log_offline() -> None:
    from wandb.errors import UsageError

    def refused(text: str) -> str:
        try:
            raise RuntimeError("while logging") from UsageError(text)
        except RuntimeError as err:
            found = wandb_refusal(err)
        assert isinstance(found, LMTrainError)
        return str(found)

    hint = "(or set WANDB_API_KEY, or log offline: logger.wandb.offline=true, WANDB_MODE=offline)"
    no_key = refused("No API key configured. Use `wandb login` to log in.")
    assert no_key.endswith(hint), no_key
    bad_id = refused("Run ID cannot contain the characters: :;,#?/'")
    assert "WANDB_API_KEY" not in bad_id and "offline" not in bad_id, bad_id
    assert bad_id.startswith("W&B refused the run: Run ID cannot contain the characters: "), bad_id


def test_a_typed_mlflow_run_name_is_redacted_in_the_store(compose_cfg, tmp_path: Path) -> None:
    secret = "hunter3abc"
    cfg = compose_cfg("logger=mlflow", f"logger.mlflow.run_name='password={secret}'")
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg)
    logger.log_hyperparams({"seed": 1})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.finalize("success")
    stored = mlflow_store(tmp_path).get_run(logger.run_id)
    assert stored.info.run_name == "<redacted>"
    assert secret not in json.dumps(stored.to_dictionary())
