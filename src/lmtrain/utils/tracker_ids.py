"""A tracker run id saved in a run folder: read back as the id it is (or refused in one line), and
which run folder it belongs to, so that a copy of the folder does not continue the original's
W&B or MLflow run.

`<run folder>/wandb_run_id` and `<run folder>/mlflow_run_id` make training resumed in that folder
(`ckpt_path=last`) go on in the same W&B and MLflow runs. A copied folder (`cp -a run1 run1copy`)
holds the same files: resuming both logged two branches into one run (MLflow's history got steps
4, 4, 5, 5). So beside each id file, `<id file>.folder` records the folder it was written in (its
resolved path), and a resume checks it before training:
- the record names another folder that exists and whose id file holds the same id: this folder
  is a copy, refused in one line that says how to start a new run or continue on purpose;
- the record names a folder that is gone (the run folder was moved) or that now holds another
  id: the id is this folder's, and the record is written again (rank 0);
- no record (an id file written before records were kept): the id is taken as this folder's.
The id files keep their one line, which other tools read (`lmtrain.utils.sweep_jobs`).

An id file is UTF-8 text, read as such: read with replacement characters, bytes that were no
text became an id (`\ufffd\ufffd`) that W&B logged under, and MLflow's refusal of it a traceback.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils.io import atomic_write

FOLDER_RECORD_SUFFIX = ".folder"
# A record is one path; the folder may come from anyone, so no more than this is read.
MAX_RECORD_CHARS = 4096
# A run id read back from a run folder (W&B's, MLflow's): up to 128 characters, none of those
# W&B refuses (`:;,#?/'`), no `\`, whitespace, control or replacement character, no leading
# `.`. The folder may come from anyone; W&B refused `../x` with a traceback.
SAVED_RUN_ID = re.compile(r"(?!\.)[^:;,#?/'\\\s\x00-\x1f\ufffd]{1,128}")
# What a run id file is read up to: more than any run id, with its line break.
MAX_ID_CHARS = 256
RUN_ID_RULES = "up to 128 characters, none of :;,#?/'\\ or spaces, not starting with '.'"


def saved_text(path: Path, limit: int = MAX_ID_CHARS) -> str | None:
    """The first `limit` characters `path` holds, stripped; None where it cannot be read or is
    not UTF-8 text (what holds no text holds no run id, and no folder's path)."""
    try:
        with path.open(encoding="utf-8") as f:
            return f.read(limit).strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_run_id(path: Path, service: str) -> str:
    """The `service` run id saved in `path`, or one line refusing what is not a run id."""
    instead = (
        f"delete the file to start a new {service} run, or write the id of the run to continue "
        "into it"
    )
    try:
        with path.open(encoding="utf-8") as f:
            saved = f.read(MAX_ID_CHARS).strip()
    except UnicodeDecodeError as err:
        raise LMTrainError(
            f"{path} holds bytes that are not UTF-8 text ({err.object[err.start : err.end]!r}), "
            f"which is not a {service} run id: {instead}"
        ) from None
    except OSError as err:
        raise LMTrainError(f"{path} cannot be read ({err.strerror or err}): {instead}") from None
    if not SAVED_RUN_ID.fullmatch(saved):
        shown = saved if len(saved) <= 60 else saved[:60] + "..."
        raise LMTrainError(
            f"{path} holds {shown!r}, which is not a {service} run id ({RUN_ID_RULES}): {instead}"
        )
    return saved


def record_path(id_file: Path) -> Path:
    """Where the folder `id_file` was written in is recorded: `<id file>.folder`."""
    return id_file.with_name(id_file.name + FOLDER_RECORD_SUFFIX)


def recorded_folder(id_file: Path) -> Path | None:
    """The folder `id_file`'s record names, or None: no record, or one that is not an absolute
    path (taken as this folder's, as a missing record is)."""
    text = saved_text(record_path(id_file), MAX_RECORD_CHARS + 1)
    if not text or len(text) > MAX_RECORD_CHARS or "\n" in text or "\0" in text:
        return None
    return Path(text) if os.path.isabs(text) else None


def same_folder(a: Path, b: Path) -> bool:
    """Whether `a` and `b` are one folder (os.path.samefile: through links and mounts too)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def other_holder(id_file: Path, run_id: str) -> Path | None:
    """The other, existing run folder that `id_file`'s record names if its own id file holds
    `run_id` too (this folder is a copy of it), else None."""
    owner = recorded_folder(id_file)
    if owner is None or same_folder(owner, id_file.parent):
        return None
    theirs_file = owner / id_file.name
    try:
        if not owner.is_dir() or not theirs_file.is_file():  # not a FIFO a folder could hold
            return None  # moved: the id is this folder's now
    except OSError:
        return None
    return owner if saved_text(theirs_file) == run_id else None


def refuse_copied_id(id_file: Path, run_id: str, service: str, setting: str) -> None:
    """One line, before training, when resuming would continue the `service` run `run_id` that
    another existing run folder continues too (this folder is its copy): delete the id file for
    a new run, or pass the id as `setting` to continue that run from the copy on purpose."""
    owner = other_holder(id_file, run_id)
    if owner is None:
        return
    run_dir = id_file.parent
    raise LMTrainError(
        f"{run_dir} is a copy of the run folder {owner}, whose {service} run {run_id} "
        f"({id_file.name}) it would continue too, two histories in one run: delete {id_file} "
        f"to start a new {service} run from the copy, or pass {setting}={run_id} to continue "
        "that run from the copy on purpose"
    )


def record_folder(id_file: Path) -> None:
    """Record that `id_file` belongs to the folder it is in, unless its record says so already
    (rank 0 only: the caller's)."""
    owner = recorded_folder(id_file)
    if owner is not None and same_folder(owner, id_file.parent):
        return
    with atomic_write(record_path(id_file)) as f:  # replaces a link there, not its target
        f.write(f"{id_file.parent.resolve()}\n")
