"""Where a logger writes, checked before it writes: one line instead of a traceback, a minutes-long
wait, or a run that quietly logs somewhere else.

Each logger library fails on a bad place in its own way, and late: TensorBoard and CSV with an
OSError at their first write, W&B by moving the run to a temporary folder (`/tmp/wandb`) with no
more than a warning, MLflow by retrying a SQLite store it cannot open for about 100 s, and an
MLflow server that does not answer for minutes (urllib3's back-off, 7 retries). Here every
logger's folder gets the same check when the logger is made (`refuse_unwritable_folder`), an
MLflow SQLite store is opened once read-only with the standard library (`refuse_unusable_sqlite`),
and the first request to an MLflow server is bounded with MLflow's own settings
(`bounded_mlflow_wait`).

What the user gives MLflow to name and tag a run is checked too (`mlflow_experiment_name`,
`mlflow_tags`): MLflow refused a number for an experiment name, and a list or mapping as a tag
value, only at its first request, after the experiment was created in the store, in a line that
blamed the store or the server and named no key. So is a CSV logger's `version`
(`csv_version_problem`): null split a resumed run's metrics.csv in two.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from lmtrain.errors import LMTrainError

RESUMABLE_CSV = "lmtrain.utils.csv_history.ResumableCSVLogger"  # the configs' CSV logger

# MLflow's HTTP settings for the first request to a server (the experiment and the run are
# looked up or made): a server that refuses or does not answer is one line in under a minute,
# not after minutes of back-off. Only those the user has not set; later requests (metrics during
# training) keep MLflow's defaults, which ride out a server's brief outage or rate limiting.
FIRST_CONTACT_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}


def refuse_unwritable_folder(folder: str | os.PathLike[str], key: str, instead: str = "") -> None:
    """Refuse `folder` (the value of config key `key`) unless it is, or can be made, a folder
    this process can write to; `instead` adds to what to do. Nothing is created: a run refused
    later leaves no empty folder behind."""
    problem = folder_problem(Path(folder))
    if problem is not None:
        raise LMTrainError(
            f"{key}={folder} cannot be written to ({problem}): give a folder you can write to"
            f"{instead}"
        )


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be made and written to, or None when it can.

    The nearest part of the path that exists decides: a file there, or a folder that is on a
    read-only file system (which refuses even root, whom a permission check lets through) or
    not writable by this user, or one that refuses a new folder all the same.
    """
    existing = folder.absolute()
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is a file, not a folder"
        if os.statvfs(existing).f_flag & os.ST_RDONLY:
            return f"{existing} is on a read-only file system"
    except OSError as err:  # a name too long, a loop of links: the path itself is unusable
        return err.strerror or str(err)
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    # A folder that passes both checks and still refuses a new entry (/proc, /sys, some FUSE
    # mounts): W&B then moved its run to the temp folder. Made and removed at once.
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".lmtrain-probe-", dir=existing))
    except OSError as err:
        return f"{existing} refuses new folders ({err.strerror or err})"
    return None


def refuse_unusable_sqlite(uri: str, source: str) -> None:
    """Refuse a `sqlite:///<path>` MLflow store that SQLite cannot open or write, before MLflow
    tries: MLflow retries opening its store ten times with back-off (about 100 s) before it
    gives up. `source` says where the URI came from (a config key, an environment variable).
    Any other kind of URI is left to MLflow."""
    from sqlalchemy.engine import make_url  # MLflow's own dependency, and its URI parser
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(uri)
    except ArgumentError:
        return  # not a database URL: MLflow says what it makes of it
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    database = Path(url.database).absolute()
    problem = folder_problem(database.parent)
    if database.exists() and not database.is_file():
        problem = f"{database} is a folder"
    elif problem is None and database.is_file():
        try:
            with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
                db.execute("PRAGMA schema_version")
        except sqlite3.DatabaseError as err:
            problem = f"{database}: {err}"
    if problem is not None:
        raise LMTrainError(
            f"the MLflow store {uri} (from {source}) cannot be used ({problem}): give in {source} "
            "an MLflow SQLite store, or a new file in a folder you can write to"
        )


@contextmanager
def bounded_mlflow_wait() -> Iterator[None]:
    """MLflow's HTTP retries and timeout bounded (FIRST_CONTACT_SETTINGS) while inside, where the
    user has not set them; as they were after. MLflow reads them at each request."""
    added = [name for name in FIRST_CONTACT_SETTINGS if name not in os.environ]
    os.environ.update({name: FIRST_CONTACT_SETTINGS[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def mlflow_validation() -> ModuleType | None:
    """MLflow's own name rules, or None where MLflow is not installed (the `loggers` extra):
    MLFlowLogger then names what is missing in one line, and only the text checks run here."""
    try:
        from mlflow.utils import validation
    except ImportError:
        return None
    return validation


def mlflow_experiment_name(key: str, name: Any, task_name: str) -> str:
    """The experiment a run logs to: `name` (the value of config key `key`), or `task_name` for
    null or an empty text, as an empty run name is null. A number (`2024`, or a `${...}` of
    one) is refused in one line, as W&B's names are: MLflow takes only text."""
    validation = mlflow_validation()
    if name is None or (isinstance(name, str) and not name.strip()):
        return task_name
    if not isinstance(name, str):
        raise LMTrainError(
            f"{key}={name!r} is not text, which MLflow needs: quote it, '{key}=\"{name}\"' "
            f"(a ${{...}} of a number: put text around it, '{key}=lr${{model.optimizer.lr}}')"
        )
    limit = validation.MAX_EXPERIMENT_NAME_LENGTH if validation else len(name)
    if len(name) > limit:
        raise LMTrainError(
            f"{key} has {len(name)} characters: MLflow takes {limit} at most, give a shorter name"
        )
    return name


def mlflow_tags(key: str, given: Mapping[Any, Any]) -> dict[str, str]:
    """The user's run tags (config key `key`) as MLflow stores them: text values, a number or a
    boolean as its text and null as an empty one (Hydra merges these over the config's own, so
    a null cannot leave a tag out). A list or a mapping is refused in one line naming
    `<key>.<tag>`, and so is a tag name MLflow refuses: MLflow failed at its first request
    with neither named, after creating the experiment."""
    validation = mlflow_validation()
    tags: dict[str, str] = {}
    for name, value in given.items():
        tag = str(name)
        valid = validation is None or (
            validation.validate_param_and_metric_name(tag) and not validation.path_not_unique(tag)
        )
        if not valid:
            raise LMTrainError(
                f"{key}.{tag} is not a tag name MLflow takes: use letters, digits and _ - . / "
                "space or :, with no leading / and no empty or .. part"
            )
        if isinstance(value, (list, tuple, Mapping)):
            parts = value.items() if isinstance(value, Mapping) else enumerate(value)
            text = ",".join(f"{k}:{v}" if isinstance(value, Mapping) else str(v) for k, v in parts)
            raise LMTrainError(
                f"{key}.{tag}={value!r} is not text, which an MLflow tag needs: give it as one "
                f"quoted text, '{key}.{tag}=\"{text}\"'"
            )
        tags[tag] = "" if value is None else str(value)
    return tags


def mlflow_entry_problem(key: str, entry: Mapping[str, Any]) -> str | None:
    """The first problem of an MLflow logger entry `key`'s tags and experiment name, for the
    config checks before any work: MLflow iterated over a string of tags, and its own refusals
    (of a list as a tag, a number as a name) came after data prep, naming no key."""
    tags = entry.get("tags")
    if tags is not None and not isinstance(tags, Mapping):
        return (
            f"{key}.tags={tags!r} is not a mapping of tag names to values: pass "
            f"'{key}.tags={{team:nlp}}' (the run's tags list goes in `tags`)"
        )
    try:
        mlflow_tags(f"{key}.tags", tags or {})
        mlflow_experiment_name(f"{key}.experiment_name", entry.get("experiment_name"), "")
    except LMTrainError as err:
        return str(err)
    return None


def csv_version_problem(key: str, entry: Mapping[str, Any]) -> str | None:
    """lmtrain's CSV logger with no `version` (null, Lightning's default): Lightning's CSVLogger
    then numbers a new `version_<n>` folder at each start, so a resumed run wrote a second
    metrics.csv holding only its own rows, beside the killed run's (red team log31), and
    `lmtrain.utils.csv_history` never saw the earlier file. Refused before any work: a kill
    cannot warn."""
    if entry.get("_target_") != RESUMABLE_CSV or entry.get("version") is not None:
        return None
    folder = f"{entry.get('name') or ''}/".lstrip("/")
    return (
        f"{key}.version=null gives every start of the run a new {folder}version_<n>/ folder, so "
        f"a resumed run would log to a second metrics.csv without the earlier rows: drop the "
        f"override (the configured '' writes {folder}metrics.csv, resumes included) or pass a "
        f"fixed name, {key}.version=v1 (a run with version_<n>/ folders already: "
        f"{key}.version=<n> goes on in version_<n>/)"
    )
