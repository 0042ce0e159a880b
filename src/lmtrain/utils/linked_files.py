"""Refuse a run folder whose files lmtrain writes in place are symbolic links.

Most of a run's files are replaced atomically (a temporary file renamed over the old one), which
replaces a link rather than writing through it. A few are written in place: Hydra's
`<job>.log` and `.hydra/*.yaml`, the CSV logger's files and `csv/batch_starts`, and the lock
(which `lmtrain.utils.locks` opens without following links). A run folder copied from a
colleague, or shared, with such a file linked elsewhere would have a resumed run write into the
file the link points to, anywhere the user can write. Other links (`checkpoints/` on scratch
storage) are a user's choice, and are left alone, except a `checkpoints/` that a copied run
folder (`cp -a`) shares with the run it was copied from: its checkpoints there say they are that
other run's, and resuming the copy would replace them (`shared_checkpoints`).
"""

from __future__ import annotations

import os
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils.earlier_checkpoint import same_file
from lmtrain.utils.outside_checkpoints import checkpoint_run
from lmtrain.utils.override_text import override_arg

# The run folder's files written in place (the lock, its fallback owner file; Hydra's `<job>.log`
# is any `*.log`), and its subfolders whose files are (Hydra's record, the CSV logger's).
WRITTEN_IN_PLACE_FILES = (".lock", ".lock.owner")
WRITTEN_IN_PLACE_FOLDERS = (".hydra", "csv")


def linked_files(folder: Path) -> list[Path]:
    """The links among what a run writes in place in `folder`: its lock and log files, its
    `WRITTEN_IN_PLACE_FOLDERS` and their files. Other links (`checkpoints/` to scratch storage,
    made before its target exists; a README linked from notes) are the user's."""
    if not folder.is_dir():
        return []
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.is_symlink() and (p.name in WRITTEN_IN_PLACE_FILES or p.name.endswith(".log"))
    ]
    for sub in (folder / name for name in WRITTEN_IN_PLACE_FOLDERS):
        if sub.is_symlink():
            found.append(sub)
        elif sub.is_dir():
            found += [p for p in sorted(sub.iterdir()) if p.is_symlink()]
    return found


def refuse_linked_files(folder: Path, key: str, other: str = "") -> None:
    """Raise LMTrainError naming the first such link in run folder `folder` (set by `key`;
    `other`: how to pass another folder, by default `another <key>`); or, before that, the
    run folder's `checkpoints/` linked to another run's checkpoints (`shared_checkpoints`)."""
    refuse_shared_checkpoints(folder, key)
    found = linked_files(folder)
    if found:
        link = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LMTrainError(
            f"{key}={folder} holds a symbolic link {link.relative_to(folder)} -> "
            f"{os.readlink(link)}{more}, which the run would write through: replace it with a "
            f"copy of what it points to, or {other or f'pass another {key}'}"
        )


def shared_checkpoints(folder: Path) -> tuple[Path, Path] | None:
    """(checkpoint, its run folder) when run folder `folder`'s `checkpoints/` is a link to the
    checkpoint folder of another run: the checkpoint there that a resume goes on from
    (`last.ckpt`, else the newest) names in its stored run config another run folder whose
    checkpoint dirpath is where the link leads. A copy (`cp -a`) keeps the link, and the copied
    `run_id`, so only the stored run folder tells it from the run that saved them; a moved
    run folder, or a copy whose link leads to storage of its own, is not another run's."""
    link = folder / "checkpoints"
    if not link.is_symlink() or not link.is_dir():
        return None
    target = link.resolve()
    saved = [p for p in target.glob("*.ckpt") if not p.name.startswith(".") and p.exists()]
    last = target / "last.ckpt"
    chosen = last if last.exists() else max(saved, key=lambda p: p.stat().st_mtime, default=None)
    if chosen is None:
        return None
    run, dirpaths = checkpoint_run(chosen)
    if run is None or same_file(run, folder) or not any(same_file(d, target) for d in dirpaths):
        return None
    return chosen, run


def refuse_shared_checkpoints(folder: Path, key: str) -> None:
    """Raise LMTrainError when `folder`'s `checkpoints/` link leads to another run's checkpoints
    (`shared_checkpoints`), before the run writes or deletes any there: Lightning would replace
    that run's `last.ckpt` and delete its best, and that run would then go on from this one's."""
    shared = shared_checkpoints(folder)
    if shared is not None:
        chosen, run = shared
        link = folder / "checkpoints"
        raise LMTrainError(
            f"{key}={folder} holds a symbolic link checkpoints -> {os.readlink(link)}, the "
            f"checkpoints of run {run} (its {chosen.name} says so), which this run would "
            f"replace: replace the link in {folder} with a folder of its own (or a link to new "
            f"storage) holding a copy of the checkpoints, or start a new run folder from it with "
            f"{override_arg('ckpt_path', chosen)} and no {key}="
        )
