"""Why `resume=<run folder>` builds another model than its checkpoint, said in one line.

With `resume=`, the model comes from the run's saved config, so a different model had two
causes, and the line used to name only the first: an edit to `.hydra/config.yaml`, or a
relative `data.source.path` (which `resume=` keeps as typed, and which means the launch folder)
resumed from another working directory, where a file of that name holds other text and so gives
another char vocabulary. The second was blamed on an edit nobody made, with a copy in
`.hydra/previous/` that no resume had made. When the vocabulary happens to match, the data
check (`lmtrain.callbacks.same_data`) names the launch folder; here the same advice comes
first, whichever difference shows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lmtrain.errors import LMTrainError
from lmtrain.utils.safe_load import CHECKPOINT_KEY

# Lightning's key for `SameDataOnEveryRank`'s state in a checkpoint's "callbacks" (its class
# name): it records the working directory the run was launched from (callbacks sit above models).
DATA_STATE_KEY = "SameDataOnEveryRank"


def relative_source_path(run_config: Mapping[str, Any] | None) -> str | None:
    """The run's `data.source.path` as typed, if any of its entries is relative (`~` is not)."""
    source = ((run_config or {}).get("data") or {}).get("source")
    path = source.get("path") if isinstance(source, Mapping) else None
    entries = [path] if isinstance(path, str) else path if isinstance(path, list) else []
    if any(isinstance(e, str) and not Path(e).expanduser().is_absolute() for e in entries):
        return path if isinstance(path, str) else ", ".join(map(str, entries))
    return None


def refuse_other_launch_folder(resume: str, meta: Mapping[str, Any], found: str) -> None:
    """Refuse, naming the launch folder, a resume whose relative `data.source.path` now finds
    other data (`found`: what differs) because this command runs in another working directory.
    `meta` is the checkpoint's contents (its run config and the launch folder its data state
    recorded); a checkpoint without them, or an absolute path, or the same folder, passes."""
    state = (meta.get("callbacks") or {}).get(DATA_STATE_KEY) or {}
    launched, here = state.get("cwd"), os.getcwd()
    path = relative_source_path((meta.get(CHECKPOINT_KEY) or {}).get("run_config"))
    if not isinstance(launched, str) or launched == here or path is None:
        return
    raise LMTrainError(
        f"resume={resume}: the run's relative data.source.path={path!r} finds other data here "
        f"than the run was trained on ({found}): the run was launched from {launched} and this "
        f"command from {here}: resume from {launched}, where a relative data.source.path finds "
        "the run's corpus"
    )


def resumed_model_refusal(
    resume: str, meta: Mapping[str, Any], listed: str, keys: set[str]
) -> LMTrainError:
    """The refusal of a resume whose saved config builds another model than its checkpoint
    (`listed`: the differences, of the config `keys`): the launch folder's where only the
    vocabulary differs, the one the data decides (`refuse_other_launch_folder`), or else an
    edit to undo, from the newest copy that an earlier resume kept, if there is one."""
    if keys == {"vocab_size"}:
        refuse_other_launch_folder(resume, meta, f"another model: {listed}")
    record = Path(resume).expanduser() / ".hydra"
    copies = sorted(record.glob("previous/*/config.yaml"))
    where = (
        f"e.g. from the copy in {copies[-1].parent}/"
        if copies
        else f"in {record / 'config.yaml'} (no earlier copy is kept)"
    )
    return LMTrainError(
        f"resume={resume}: the run's .hydra/config.yaml describes another model than its "
        f"checkpoint ({listed}): undo the edit, {where}; resume= keeps the model the run was "
        "trained with"
    )


@contextmanager
def launch_folder_first(resume: str | None, meta: Mapping[str, Any], found: str) -> Iterator[None]:
    """A refusal inside (another tokenizer) that a resume's other launch folder explains is
    replaced by the launch folder's line: its own advice (resume with the run's data settings)
    is what `resume=` already did."""
    try:
        yield
    except LMTrainError:
        if resume:
            refuse_other_launch_folder(resume, meta, found)
        raise
