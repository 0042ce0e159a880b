"""MLflow runs named, grouped and given the whole config as W&B runs are.

A single run is named after its run folder; a multirun job after the overrides its sweep varies
(`lmtrain.utils.wandb_run.job_name`, secret values redacted), and tagged `group`: its sweep
folder. Training resumed in a run folder goes on in the same MLflow run (its id is kept in
`<run folder>/mlflow_run_id`). A `logger.mlflow.run_id` fixed for a whole sweep is refused: every
job would log into that one run (MLflow makes run ids itself, so a job can only be given one that
exists; each job's own comes from its folder when it resumes).

MLflow gets the run config that train.py logs, resolved and redacted, flattened to `a/b/c` keys
(as Lightning flattens them for every logger). MLflow keeps params of up to 6000 characters and
refuses some key characters and keys over 250 characters; Lightning cuts every value to 250 and
passes keys as they are, so a long prompt list would be cut short and a key with a bad character
would fail the run. Here values keep MLflow's own limit and keys are made ones it takes.

A SQLite store is made (its tables) and its experiment created by the first run that uses it:
parallel sweep jobs did both at once, and all but one failed. Both are done holding a lock
beside the database (`<database>.lock`, lmtrain.utils.locks).

The TensorBoard logger, split from here, is lmtrain.utils.tensorboard_run; configs and saved run
folders name it (and instantiate.py imports it) from here.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.locks import acquire
from lmtrain.utils.logger_checks import (
    bounded_mlflow_wait,
    mlflow_experiment_name,
    mlflow_tags,
    refuse_unusable_sqlite,
    refuse_unwritable_folder,
)
from lmtrain.utils.logger_names import flat_params, sweep_job
from lmtrain.utils.redact import redact
from lmtrain.utils.sweep_run_ids import refuse_shared_run_id
from lmtrain.utils.tensorboard_run import TensorBoardLogger as TensorBoardLogger
from lmtrain.utils.tensorboard_run import is_tensorboard_entry as is_tensorboard_entry
from lmtrain.utils.tensorboard_run import tensorboard_kwargs as tensorboard_kwargs
from lmtrain.utils.tracker_ids import read_run_id, record_folder, refuse_copied_id, saved_text

log = logging.getLogger(__name__)

# What MLflow refuses in a param key (mlflow.utils.validation.validate_param_and_metric_name).
BAD_MLFLOW_KEY_CHARS = re.compile(r"[^\w/.\- :]")
# Where a run folder keeps its MLflow run's id (see mlflow_kwargs).
MLFLOW_RUN_ID_FILE = "mlflow_run_id"
# The stores our loggers handed MLflow in this process: Lightning's MLFlowLogger calls
# mlflow.set_tracking_uri, which exports MLFLOW_TRACKING_URI, so a later run in this process
# would take the first one's store for the user's server (see users_tracking_uri).
EXPORTED_STORES: set[str] = set()


def users_tracking_uri() -> str | None:
    """MLFLOW_TRACKING_URI as the user set it, read per run (a notebook may set it between two),
    unless it is a store one of our loggers exported earlier in this process."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or None
    return None if uri in EXPORTED_STORES else uri


def is_mlflow_entry(entry: DictConfig) -> bool:
    return str(entry.get("_target_", "")).endswith("MLFlowLogger")


def mlflow_kwargs(entry: DictConfig, run_cfg: DictConfig, resuming: bool) -> dict[str, Any]:
    """The MLflow run's name (unless configured), tags naming its group and run folder, and the
    run to continue when `resuming`.

    A single run is named after its run folder (the experiment already names the task); a
    multirun job after its swept overrides, tagged `group`: <task_name>/<sweep folder>. The run
    id is kept in `<run folder>/mlflow_run_id`, so that training resumed in that folder (also a
    requeued SLURM job) goes on in the same MLflow run, as it does in W&B (a copy of the folder
    does not: lmtrain.utils.tracker_ids). A configured run_name is redacted as W&B's name is.
    """
    run_dir = Path(run_cfg.paths.output_dir)
    job = sweep_job(run_cfg)
    tags = {"run_dir": str(run_dir), "tags": ",".join(map(str, run_cfg.get("tags") or []))}
    if job is not None:
        tags["group"] = job[1]
    # The user's tags win (`+logger.mlflow.tags.group=lr-study` names the group itself); each
    # is checked before MLflow is touched (a bad one left an experiment behind in the store).
    key = f"logger.{entry._key()}"
    configured_tags = entry.get("tags") or OmegaConf.create({})  # a mapping: config_checks
    given = mlflow_tags(f"{key}.tags", OmegaConf.to_container(configured_tags, resolve=True))
    kwargs: dict[str, Any] = {"tags": redact({**tags, **given})}  # as the params are
    kwargs["experiment_name"] = mlflow_experiment_name(
        f"{key}.experiment_name", entry.get("experiment_name"), str(run_cfg.task_name)
    )
    name = entry.get("run_name")
    if name is None or not str(name).strip():  # "" as null, as W&B's name (MLflow made one up)
        kwargs["run_name"] = job[0] if job is not None else run_dir.name
    elif redact(str(name)) != name:  # MLflow stores it as given (password=... reached it)
        kwargs["run_name"] = redact(str(name))  # over the entry's: Hydra merges kwargs over it
    configured = entry.get("run_id")
    if configured is not None:  # a number ($SLURM_JOB_ID) as text: MLflow takes only text
        kwargs["run_id"] = str(configured)
        # Under -m, one id for every job: their runs would be one.
        refuse_shared_run_id(
            entry, "run_id", kwargs["run_id"], run_dir, MLFLOW_RUN_ID_FILE, "MLflow", False
        )
    saved = run_dir / MLFLOW_RUN_ID_FILE
    kwargs["run_id_file"] = str(saved)
    if resuming and configured is None and saved.is_file():
        kwargs["run_id"] = read_run_id(saved, "MLflow")
        refuse_copied_id(saved, kwargs["run_id"], "MLflow", "logger.mlflow.run_id")
    return kwargs


@contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Hold `<database>.lock` while inside, for a SQLite store (the lock waits for another
    process making the store's tables or its experiment); no lock for any other store."""
    from sqlalchemy.engine import make_url  # MLflow's own dependency, and its URI parser
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(tracking_uri)
    except ArgumentError:
        url = None
    if url is None or url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        yield
        return
    database = Path(url.database).absolute()
    database.parent.mkdir(parents=True, exist_ok=True)
    release = acquire(database.with_name(database.name + ".lock"), wait=True)
    try:
        yield
    finally:
        release()


def mlflow_key(key: str, limit: int) -> str:
    """`key` as MLflow takes a param key: its characters, a normalized path, `limit` long at most
    (a longer key keeps its start and a digest of the whole, so that two stay apart)."""
    clean = posixpath.normpath(BAD_MLFLOW_KEY_CHARS.sub("_", key)).lstrip("/")
    clean = "_" if clean in ("", ".") or clean.startswith("..") else clean
    if len(clean) <= limit:
        return clean
    return clean[: limit - 9] + "-" + hashlib.sha1(key.encode()).hexdigest()[:8]


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger with a local store by default and params MLflow always takes.

    `tracking_uri` null: MLFLOW_TRACKING_URI when set, else a SQLite store in `save_dir`
    (`<save_dir>/mlflow.db`, artifacts in `<save_dir>/artifacts`), which `mlflow ui
    --backend-store-uri sqlite:///<save_dir>/mlflow.db` reads. Lightning's default, a file store,
    is refused by MLflow 3 unless MLFLOW_ALLOW_FILE_STORE=true.

    A store it cannot use is one line when the logger is made (an unwritable save_dir, a SQLite
    file that is not a database: lmtrain.utils.logger_checks), and a server that does not answer
    one line at the first request, within about a minute.
    """

    def __init__(
        self,
        save_dir: str = "./mlruns",
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        run_id_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import SQLAlchemyError

        source = "logger.mlflow.tracking_uri" if tracking_uri else "MLFLOW_TRACKING_URI"
        tracking_uri = tracking_uri or users_tracking_uri()
        if not tracking_uri:
            source = "logger.mlflow.save_dir"
            server = ", or a server in logger.mlflow.tracking_uri"
            refuse_unwritable_folder(save_dir, source, server)
            store = Path(save_dir).absolute()
            tracking_uri = f"sqlite:///{store / 'mlflow.db'}"
            artifact_location = artifact_location or str(store / "artifacts")
        refuse_unusable_sqlite(tracking_uri, source)
        try:
            with store_lock(tracking_uri):  # a new store's tables are made here
                super().__init__(
                    save_dir=save_dir,
                    tracking_uri=tracking_uri,
                    artifact_location=artifact_location,
                    **kwargs,
                )
        except (MlflowException, SQLAlchemyError) as err:  # the store is opened here
            raise LMTrainError(
                f"MLflow cannot use the tracking URI {tracking_uri!r} (from {source}: "
                f"{first_line(err)}): set logger.mlflow.tracking_uri to a server "
                "(http://host:5000) or a database (sqlite:///path/to/mlflow.db), or null for the "
                "local store in logger.mlflow.save_dir"
            ) from None
        if source != "MLFLOW_TRACKING_URI":
            EXPORTED_STORES.add(tracking_uri)
        self.store_uri = tracking_uri
        self.store_source = source
        self.continued_run = kwargs.get("run_id")
        self.run_id_file = Path(run_id_file) if run_id_file else None

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Log `params` flattened; values cut at MLflow's limit, keys made ones it takes.

        A continued run keeps the params it has: MLflow refuses to change one (a resume's
        `ckpt_path` differs), so only new ones are added.
        """
        from mlflow.entities import Param
        from mlflow.utils.validation import (
            MAX_ENTITY_KEY_LENGTH,
            MAX_PARAM_VAL_LENGTH,
            MAX_PARAMS_TAGS_PER_BATCH,
        )

        flat = {
            mlflow_key(key, MAX_ENTITY_KEY_LENGTH): str(value)[:MAX_PARAM_VAL_LENGTH]
            for key, value in flat_params(params).items()
        }
        run_id = self.run_or_refuse()
        if self.continued_run is not None:
            logged = self.experiment.get_run(run_id).data.params
            changed = sorted(k for k, v in flat.items() if logged.get(k, v) != v)
            if changed:
                log.info("MLflow run %s keeps its first values of %s", run_id, ", ".join(changed))
            flat = {k: v for k, v in flat.items() if k not in logged}
        batch = [Param(key=key, value=value) for key, value in flat.items()]
        for start in range(0, len(batch), MAX_PARAMS_TAGS_PER_BATCH):
            chunk = batch[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self.experiment.log_batch(run_id=run_id, params=chunk)
        if self.run_id_file is not None:
            self.run_id_file.parent.mkdir(parents=True, exist_ok=True)
            self.run_id_file.write_text(run_id + "\n")
            record_folder(self.run_id_file)

    def run_or_refuse(self) -> str:
        """This logger's run id; the run is made on first use, the first contact with the store.

        A server that cannot be reached is one line within about a minute (bounded_mlflow_wait),
        and so is a continued run the store does not hold, saying where its id came from.
        """
        from mlflow.exceptions import MlflowException

        try:
            with bounded_mlflow_wait(), store_lock(self.store_uri):  # its experiment made here
                return self.run_id
        except MlflowException as err:
            if self.continued_run is None:
                raise LMTrainError(
                    f"MLflow could not start its run in {self.store_uri} (from "
                    f"{self.store_source}: {first_line(err)}): check that the server runs and "
                    "answers, or set logger.mlflow.tracking_uri to one that does, or to null for "
                    "the local store in logger.mlflow.save_dir"
                ) from None
            saved = self.run_id_file
            from_file = saved is not None and saved.is_file()
            if from_file and saved_text(saved) == self.continued_run:
                where, instead = str(saved), f"delete {saved}"
            else:
                where, instead = "logger.mlflow.run_id", "set logger.mlflow.run_id=null"
            raise LMTrainError(
                f"MLflow run {self.continued_run} (from {where}) is not in {self.store_uri} "
                f"({first_line(err)}): point logger.mlflow.tracking_uri at the store that holds "
                f"it, or {instead} to start a new MLflow run"
            ) from None
