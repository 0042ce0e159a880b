"""The checkpoint callbacks' folders: another run's checkpoints are not replaced, and a folder
that cannot be written is found before training.

A `callbacks.model_checkpoint.dirpath` outside the run folder may hold another run's
checkpoints, which this run's saves would replace (the run folder's own `checkpoints/` is
`lmtrain.utils.run_folder.claim_run_folder`'s to check). And a folder that cannot be written
(read-only, another user's, a teammate's run resumed in place) was found at the first save, after
the training up to it, as a PermissionError traceback.
"""

from __future__ import annotations

import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lmtrain.errors import LMTrainError
from lmtrain.utils import locks

KEY = "callbacks.model_checkpoint.dirpath"
_dirpaths_held: list[Callable[[], None]] = []  # unlocks of this run's outside checkpoint folders


def release_dirpaths() -> None:
    """Let go of the outside checkpoint folders this process holds (its run is over)."""
    while _dirpaths_held:
        _dirpaths_held.pop()()


def refuse_foreign_checkpoint_dirs(
    dirpaths: list[str | Path],
    output_dir: str | Path,
    ckpt_path: str | Path | None,
    overwrite: bool,
) -> None:
    """Raise LMTrainError when a checkpoint callback's `dirpath` cannot be written, or lies
    outside the run folder and already holds checkpoints this run does not resume from. Rank 0
    then locks an outside folder for the run, and checks again: two runs started together both
    found it empty, and wrote over each other's checkpoints. A remote dirpath (`s3://...`) is
    Lightning's to write."""
    own = Path(output_dir).resolve()
    release_dirpaths()  # this process's previous run is over
    for dirpath in (d for d in dirpaths if "://" not in str(d)):
        folder = Path(dirpath).expanduser().resolve()
        outside = not (folder == own or own in folder.parents)
        if outside:
            refuse_checkpoints_in(folder, ckpt_path, overwrite)
        if getattr(rank_zero_only, "rank", 0) != 0:
            continue
        refuse_unwritable(folder)
        if outside:
            folder.mkdir(parents=True, exist_ok=True)  # for its lock
            _dirpaths_held.append(locks.lock_folder(folder, KEY))
            refuse_checkpoints_in(folder, ckpt_path, overwrite)
            if [p.name for p in folder.iterdir()] == [locks.RUN_FOLDER_LOCK]:  # only the lock
                message = f"Checkpoint directory {re.escape(str(folder))} exists and is not"
                warnings.filterwarnings("ignore", message=message)  # Lightning's, of the lock


def refuse_unwritable(folder: Path) -> None:
    """Write a file (deleted at once) in `folder`, or in its nearest existing parent when it is
    still to be made (nothing is made here: a run refused later leaves no folder), or raise
    LMTrainError: permission bits do not tell, as root passes them and a read-only file system
    refuses root."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(existing))
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise LMTrainError(
            f"{KEY}={folder} cannot be created or written ({err.strerror}), and the run would "
            f"fail at its first save: make it writable, or pass another {KEY} (by default the "
            "run folder's checkpoints/)"
        ) from None


def refuse_checkpoints_in(folder: Path, ckpt_path: str | Path | None, overwrite: bool) -> None:
    """Raise LMTrainError when the checkpoint folder `folder`, outside the run folder, holds
    checkpoints the run does not resume from (and `overwrite` is off)."""
    if overwrite or (ckpt_path is not None and folder in Path(ckpt_path).resolve().parents):
        return  # replacing them is allowed, or resuming from this folder's checkpoint
    found = sorted(p.name for p in folder.glob("*.ckpt"))
    if found:
        raise LMTrainError(
            f"callbacks.model_checkpoint.dirpath={folder} holds another run's checkpoints "
            f"({', '.join(found[:3])}{' ...' if len(found) > 3 else ''}), which this run "
            "would replace: pass a new dirpath (by default the run folder's checkpoints/), "
            "resume from them with ckpt_path=<file there>, or overwrite_run=true"
        )
