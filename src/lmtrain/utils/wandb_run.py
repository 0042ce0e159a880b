"""One W&B run per run folder: its name, group and id, and the way back to it when training resumes.

The run folder keeps the W&B run id in `wandb_run_id`, written by rank 0 when the logger is
made. Training that resumes in that folder (`ckpt_path=last`, a checkpoint, or a requeued SLURM
job) passes the id again, and Lightning's WandbLogger initializes with `resume="allow"`, so the
same W&B run goes on instead of a second one starting (not in a copy of the folder while the
original is there: `lmtrain.utils.tracker_ids`). In a multirun every job is named by its
overrides (`model.optimizer.lr=0.001,seed=2`) and grouped by its sweep folder, so the dashboard
shows a sweep as one group whose members say what they tried; a run that continues a sweep
job's folder keeps that name and group (`lmtrain.utils.sweep_job_names`). A `logger.wandb.id`
fixed for a whole sweep is refused (`lmtrain.utils.sweep_run_ids`).

No command line goes to W&B: a literal `+extra.password=...` override would sit in the run file
that `wandb sync` uploads. W&B's system metadata (which holds `sys.argv`) is off unless
`logger.wandb.settings.x_disable_meta=false`, and a job's name redacts a secret override's
value (`lmtrain.utils.redact`). What ran is in the run config, logged resolved and redacted.

WANDB_MODE, when set, wins over `logger.wandb.offline` (`mode_from_environment`), as in W&B.

`logger.wandb.log_model=true` is not Lightning's (which uploads checkpoints and refuses offline
runs): Lightning's is kept off, and `lmtrain.callbacks.wandb_artifact` logs the exported model
(neither export nor artifact when the W&B run is disabled).
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.redact import redact
from lmtrain.utils.sweep_job_names import job_name as job_name  # lmtrain.utils.launch's
from lmtrain.utils.sweep_job_names import sweep_job
from lmtrain.utils.sweep_run_ids import refuse_shared_run_id
from lmtrain.utils.tracker_ids import (
    RUN_ID_RULES,
    SAVED_RUN_ID,
    read_run_id,
    record_folder,
    refuse_copied_id,
)

RUN_ID_FILE = "wandb_run_id"
# What W&B refuses in a project name (wandb.Settings' check), refused in an entity too, with
# spaces: the two make the run's path, `<entity>/<project>/<run id>`.
REFUSED_NAME_CHARS = "/\\#?%: "
MAX_NAME_CHARS = 128
# The callback that logs the model artifact when logger.wandb.log_model=true.
ARTIFACT_CALLBACK = "WandbModelArtifact"


def is_wandb_entry(entry: Mapping[str, Any]) -> bool:
    return str(entry.get("_target_", "")).endswith("WandbLogger")


def wandb_kwargs(entry: DictConfig, run_cfg: DictConfig, resuming: bool) -> dict[str, Any]:
    """Keyword arguments that complete a WandbLogger config entry for this run.

    `name` and `group` left null are filled in (task name for a run; overrides and sweep folder
    for a multirun job, or a run that continues one's folder); `id` comes from the run folder
    when `resuming`, else it is new (or the configured one) and is saved there.
    """
    check_log_model(entry, run_cfg)
    check_project(entry)
    check_entity(entry)
    # Lightning's own log_model uploads checkpoints and refuses offline runs: the model artifact
    # is lmtrain's callback (callbacks.wandb_model), online or offline.
    kwargs: dict[str, Any] = {"settings": wandb_settings(entry), "log_model": False}
    kwargs.update(mode_from_environment())
    # Always a mode of its own: W&B keeps the WANDB_MODE it saw at its first run in the process
    # (a notebook's earlier `disabled` turned every later offline run off).
    offline = kwargs.get("offline", entry.get("offline", False)) is True
    kwargs.setdefault("mode", "offline" if offline else "online")
    job = sweep_job(run_cfg)  # also of a run that continues a sweep job's folder
    # An empty name or group is null's (as an empty logger.mlflow.tracking_uri is): W&B left
    # the run unnamed, or a sweep job ungrouped.
    if not str(entry.get("name") or "").strip():
        kwargs["name"] = job[0] if job is not None else run_cfg.task_name
    if not str(entry.get("group") or "").strip() and job is not None:
        kwargs["group"] = job[1]
    # W&B stores these as given, not through the config that is redacted: a secret typed into
    # one (tags=[${oc.env:HF_TOKEN}]) would reach the run file that `wandb sync` uploads.
    for key in SHOWN_AS_GIVEN:
        value = kwargs.get(key, entry.get(key))
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        if value is not None:
            kwargs[key] = redact(value)
    if run_cfg.get("trainer", {}).get("fast_dev_run") or kwargs.get("mode") == "disabled":
        return kwargs  # no W&B run (fast_dev_run: Lightning swaps every logger for a dummy)
    run_dir = Path(run_cfg.paths.output_dir)
    configured = configured_run_id(entry.get("id"))
    if configured is not None:  # under -m, each job's own
        refuse_shared_run_id(entry, "id", configured, run_dir, RUN_ID_FILE, "W&B")
    derived = "id" in entry and OmegaConf.is_interpolation(entry, "id")
    kwargs["id"] = run_id(run_dir, entry.get("id"), resuming, derived)
    return kwargs


# WandbLogger keywords W&B keeps as they are (the config goes through redact() elsewhere).
SHOWN_AS_GIVEN = ("name", "group", "notes", "tags", "job_type")


def mode_from_environment() -> dict[str, Any]:
    """WANDB_MODE, when the user set it, over `logger.wandb.offline`, as W&B's convention has it
    (`WANDB_MODE=disabled` turns W&B off without touching code or config): the WandbLogger
    keywords for it, or none when it is unset.

    Lightning's WandbLogger sets WANDB_MODE=dryrun itself for an offline run, which is not the
    user's: `lmtrain.utils.task` puts the environment back when a run ends.
    """
    import wandb
    from pydantic import ValidationError

    mode = os.environ.get("WANDB_MODE", "").strip()
    if not mode:
        return {}
    try:
        wandb.Settings(mode=mode)  # W&B's own list of modes
    except ValidationError:
        raise LMTrainError(
            f"WANDB_MODE={mode!r} is not a W&B mode: set it to online, offline or disabled, or "
            "unset it to follow logger.wandb.offline"
        ) from None
    offline = mode in ("offline", "dryrun")
    return {"offline": offline} if offline else {"offline": False, "mode": mode}


def check_project(entry: DictConfig) -> None:
    """The project is a name W&B takes, by W&B's own check (wandb.Settings), now rather than at
    the first log with a traceback."""
    import wandb
    from pydantic import ValidationError
    from wandb.errors import UsageError

    project = entry.get("project")
    if project is None:
        return
    if not str(project).strip():  # Lightning would log into "lightning_logs" instead
        raise LMTrainError(
            f"logger.{entry._key()}.project={project!r} is empty: give a project name (such as "
            "lmtrain-runs), or logger.wandb.project=null for $WANDB_PROJECT"
        )
    try:
        wandb.Settings(project=str(project))
    except (UsageError, ValidationError) as err:
        raise LMTrainError(
            f"logger.{entry._key()}.project={project!r} is not a W&B project name "
            f"({first_line(err)}): give a name without / \\ # ? % : (such as lmtrain-runs)"
        ) from None


def check_entity(entry: DictConfig) -> None:
    """The entity (user or team) is a name W&B can take: wandb.Settings checks only the project,
    and `entity=bad/ent` went on to the run (whose path is `<entity>/<project>/<run id>`)."""
    entity = entry.get("entity")
    if entity is None or entity == "":  # W&B's default entity, as null
        return
    if not isinstance(entity, str):  # W&B refused a number with a pydantic traceback
        raise LMTrainError(
            f"logger.{entry._key()}.entity={entity!r} is not text, which W&B needs: quote it, "
            f"'logger.{entry._key()}.entity=\"{entity}\"'"
        )
    bad = sorted({c for c in entity if c in REFUSED_NAME_CHARS or not c.isprintable()})
    if bad or len(entity) > MAX_NAME_CHARS:
        found = f"has {' '.join(map(repr, bad))}" if bad else f"{len(entity)} characters"
        raise LMTrainError(
            f"logger.{entry._key()}.entity={entity!r} is not a W&B entity name ({found}): give "
            f"your W&B user or team name, up to {MAX_NAME_CHARS} characters without / \\ # ? % "
            f": or spaces, or logger.{entry._key()}.entity=null for your default entity"
        )


def wandb_settings(entry: DictConfig) -> Any:
    """The `wandb.Settings` of this run: the entry's `settings` (fields of wandb.Settings), with
    `x_disable_meta` on unless they say otherwise (see the module docstring).

    Built here because wandb.init silently ignores a settings mapping that is not a plain dict,
    which is what Hydra would pass.
    """
    import wandb  # only for a W&B logger, which imports it anyway
    from pydantic import ValidationError  # what wandb.Settings raises

    where = f"logger.{entry._key()}.settings"
    given = entry.get("settings") or OmegaConf.create({})
    if not isinstance(given, DictConfig):
        raise LMTrainError(
            f"{where}={given!r} is not a mapping: give fields of wandb.Settings "
            f"({where}.x_disable_meta=true)"
        )
    fields = OmegaConf.to_container(given, resolve=True)
    fields.pop("_target_", None)  # the same fields written as {_target_: wandb.Settings, ...}
    try:
        return wandb.Settings(**{"x_disable_meta": True, **fields})
    except ValidationError as err:  # one entry per bad field
        bad = [f"{'.'.join(map(str, e['loc']))}={e['input']!r} ({e['msg']})" for e in err.errors()]
        raise LMTrainError(
            f"{where} has bad values: {'; '.join(bad)}: use fields of wandb.Settings with "
            "values of their type (e.g. x_disable_meta=true)"
        ) from None


def run_id(run_dir: Path, configured: object, resuming: bool, derived: bool = False) -> str:
    """The W&B run id for this run folder, saved in `<run_dir>/wandb_run_id` by rank 0.

    Resuming reuses the saved id, unless another run folder that this one is a copy of holds it
    (`lmtrain.utils.tracker_ids`); otherwise the configured id (logger.wandb.id) or a new one.
    A configured id typed as such wins over the saved one (to continue a run on purpose); one
    `derived` from the config by a `${...}` does not: it named the run when the run began, and
    resumed it may come out otherwise (a sweep job's `exp-${hydra:job.num}`, resumed with
    resume=<sweep>/<n> as a single run, was `exp-None`: a new W&B run, the job's id replaced).
    """
    path = run_dir / RUN_ID_FILE
    given = configured_run_id(configured)
    if resuming and (given is None or derived) and path.is_file():
        saved = read_run_id(path, "W&B")
        refuse_copied_id(path, saved, "W&B", "logger.wandb.id")
        if rank_zero_only.rank == 0:
            record_folder(path)  # a moved folder's record, or an older file's first
        return saved
    new_id = given or generate_id()
    if rank_zero_only.rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(new_id + "\n")
        record_folder(path)
    return new_id


def configured_run_id(value: object) -> str | None:
    """logger.wandb.id as text (None when unset), checked before anything is written.

    A number ($SLURM_JOB_ID) is its digits: W&B takes only text (`int + str` failed). W&B
    refused an id such as `abc/def` only at its first use, after the id file held it.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool | float):  # Hydra read 1e3 as 1000.0, true as True: not as typed
        raise LMTrainError(
            f"logger.wandb.id={value!r} was read as a {type(value).__name__}, not as the text "
            f"typed: quote it, logger.wandb.id=\"'<id>'\""
        )
    text = str(value)
    if not SAVED_RUN_ID.fullmatch(text):
        raise LMTrainError(
            f"logger.wandb.id={text!r} is not a W&B run id ({RUN_ID_RULES}): pass one such as "
            "exp-1, or logger.wandb.id=null for a new id"
        )
    return text


def generate_id(length: int = 8) -> str:
    """A random id in W&B's style (lowercase letters and digits)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def check_log_model(entry: DictConfig, run_cfg: DictConfig) -> None:
    """log_model is true or false, and true has the callback that logs the model artifact.

    Lightning's `all` (every checkpoint) has no counterpart here: one line says so.
    """
    value = entry.get("log_model")
    if value is False or value is None:
        return
    if value is not True:
        raise LMTrainError(
            f"logger.wandb.log_model={value!r} is not true or false: pass log_model=true to log "
            "the best checkpoint, exported, as a W&B model artifact at the end of training"
        )
    callbacks = run_cfg.get("callbacks") or {}
    if not any(
        isinstance(c, DictConfig) and str(c.get("_target_", "")).endswith(ARTIFACT_CALLBACK)
        for c in callbacks.values()
    ):
        raise LMTrainError(
            "logger.wandb.log_model=true needs the callback that logs the model "
            f"(callbacks.wandb_model, {ARTIFACT_CALLBACK}), which this run's callbacks lack: "
            "use callbacks=default, or keep log_model=false"
        )
