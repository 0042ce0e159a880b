"""Where `lmtrain.export` may write its folder, and how it puts it there without losing anything.

An export is written beside out_dir under `.<name>.tmp-<pid>` and renamed into place; a previous
export is first moved aside to `.<name>.old-<pid>`. `overwrite=true` replaces only a previous
export (a folder holding `lmtrain.json` and `config.json`): a run folder, any folder holding the
checkpoint being exported, the working directory or a folder of other files is refused with one
line, whatever overwrite says. Even then it replaces only the files an export writes: anything
else in the folder is carried into the new folder before the rename
(`lmtrain.utils.export_overwrite`). Exporters killed mid-way leave their temporary folders
behind; the next export to the same out_dir removes those of dead exporters (never a live
one's), after putting back a previous export that one left moved aside
(`restore_interrupted_swap`).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

from lmtrain.errors import LMTrainError
from lmtrain.utils import locks

# Written by lmtrain.export beside the HF files (the run config and what training reached): the
# marker of a previous export, the only kind of folder an export replaces.
EXPORT_META = "lmtrain.json"
# What marks a folder as a training run's (Hydra's config copy, checkpoints, final metrics).
RUN_MARKERS = (".hydra", "checkpoints", "metrics.json")
NEVER_REPLACED = "such a folder is never replaced, even with overwrite=true; pass a new folder"
# How long an export waits for a lock on out_dir's parent that is not another exporter's rename.
SWAP_LOCK_WAIT_S = 10.0

log = logging.getLogger(__name__)


def out_dir_path(value: Any) -> str | None:
    """out_dir as the path to write, or None when it is no path at all.

    `out_dir=null` was str()-ed into a folder named `None`, and `out_dir=true` or `out_dir=1.5`
    (Hydra reads them as a bool or a number) into `True` or a float's spelling of it. A whole
    number is taken as the name it is typed as (`out_dir=2024`).
    """
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, PurePath):  # from Python: `cfg.out_dir = Path(...)`
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def out_dir_problem(value: Any) -> str:
    """The one-line refusal of an out_dir that `out_dir_path` does not take."""
    quote = ""
    if isinstance(value, bool | float):  # typed as a name, read by Hydra as a value
        name = str(value).lower() if isinstance(value, bool) else value
        quote = f", quoted when Hydra reads it as a value: out_dir=\"'{name}'\""
    return f"out_dir={value!r} is not a folder path: pass out_dir=<folder>{quote}"


def checked_out_dir(given: str, source: str, root_dir: str, overwrite: bool) -> Path:
    """out_dir as an absolute path, once it is sure that writing there loses nothing.

    `given` is what the user passed, `source` the checkpoint (or exported folder) being exported,
    `root_dir` the project root (paths.root_dir).
    """
    path = Path(given).expanduser()
    if path.is_symlink():
        raise LMTrainError(
            f"out_dir={given!r} is a symbolic link (to {os.readlink(path)}): pass the folder it "
            "points to, or a new folder"
        )
    out_dir = path.resolve()
    restore_interrupted_swap(out_dir)
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    if not existing.is_dir():
        where = "" if existing == out_dir else f" is inside {str(existing)!r}, which"
        raise LMTrainError(f"out_dir={given!r}{where} is a file, not a folder: pass a folder path")
    refuse_unrenamable(given, out_dir, existing)
    ckpt = f"ckpt_path={source!r} (the checkpoint being exported)"
    protected = [(p, ckpt) for p in checkpoint_locations(source)]
    protected += [(Path.cwd(), f"the working directory {str(Path.cwd())!r}")]
    protected += [(Path(root_dir).expanduser().resolve(), f"the project root {root_dir!r}")]
    for inside, what in protected:
        if inside.is_relative_to(out_dir):
            raise LMTrainError(f"out_dir={given!r} is or contains {what}: {NEVER_REPLACED}")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return out_dir
    marker = next((m for m in RUN_MARKERS if (out_dir / m).exists()), None)
    if marker:
        raise LMTrainError(f"out_dir={given!r} is a run folder (it has {marker}): {NEVER_REPLACED}")
    if not is_previous_export(out_dir):
        raise LMTrainError(
            f"out_dir={given!r} is not empty and is not an lmtrain export (no {EXPORT_META}): "
            "overwrite=true only replaces a previous export; pass a new or empty folder"
        )
    if run := run_inside(out_dir):
        raise LMTrainError(f"out_dir={given!r} holds a run folder ({run}): {NEVER_REPLACED}")
    if not overwrite:
        raise LMTrainError(
            f"out_dir={given!r} exists and is not empty: pass overwrite=true or another out_dir"
        )
    return out_dir


def refuse_unrenamable(given: str, out_dir: Path, existing: Path) -> None:
    """An export is made beside out_dir and renamed into place: a mount point (a container's
    volume) cannot be renamed, nor a sibling made in a folder the user cannot write. Both
    failed after the model was loaded and checked, in a line asking for a writable out_dir."""
    writable = out_dir.is_dir() and os.access(out_dir, os.W_OK | os.X_OK)
    advice = (
        f"pass a new folder inside it, e.g. out_dir={str(out_dir / 'model')!r}"
        if writable
        else "pass a folder under one you can write"
    )
    if out_dir.is_dir() and os.path.ismount(out_dir):
        raise LMTrainError(
            f"out_dir={given!r} is a mount point, and an export is written beside out_dir, then "
            f"renamed into place: {advice}"
        )
    where = out_dir.parent if out_dir.exists() else existing
    if not os.access(where, os.W_OK | os.X_OK):
        raise LMTrainError(
            f"out_dir={given!r}: {str(where)!r} is not writable, and an export is written beside "
            f"out_dir, then renamed into place: {advice}"
        )


def checkpoint_locations(source: str) -> set[Path]:
    """Where the checkpoint is: its path with the folders resolved, and where a symlink leads."""
    path = Path(source).expanduser().absolute()
    return {path.parent.resolve() / path.name, path.resolve()}


def is_previous_export(folder: Path) -> bool:
    """What lmtrain.export writes: the HF config (peft's, for LoRA adapters alone) and
    lmtrain's own meta file."""
    configs = ("config.json", "adapter_config.json")
    return (folder / EXPORT_META).is_file() and any((folder / c).is_file() for c in configs)


def run_inside(folder: Path) -> Path | None:
    """A run folder at any depth of `folder` (only walked for a previous export: a few files)."""
    for parent, folders, files in os.walk(folder):
        if any(m in folders or m in files for m in RUN_MARKERS):
            return Path(parent)
    return None


def hold_lock(folder: Path) -> int | None:
    """An flock on `folder`, held until the returned descriptor is closed or the process dies.

    It tells later exports that the folder's exporter is alive where its pid means nothing (an
    exporter on another host or in another container sharing the disk). The export forks no
    workers that could inherit it. None where the file system has no locks.
    """
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def restore_interrupted_swap(out_dir: Path) -> None:
    """Put a previous export back where an exporter killed between `replace_folder`'s two
    renames left it (`.<name>.old-<pid>`, out_dir missing): it may hold files that only it has,
    such as a hub clone's `.git/`, which `remove_dead_leftovers` would otherwise delete."""
    if out_dir.exists() or not out_dir.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.old-(\d+)")
    for path in sorted(out_dir.parent.iterdir()):
        found = pattern.fullmatch(path.name)
        if found and path.is_dir() and not path.is_symlink():
            pid = int(found.group(1))
            if pid == os.getpid() or not locks.alive(pid):
                os.replace(path, out_dir)
                return


def make_parents(out_dir: Path) -> list[Path]:
    """Create out_dir's missing parent folders; return them, deepest first, for
    `remove_if_empty` to take back should the export fail (a failed export left them empty)."""
    missing = list(itertools.takewhile(lambda folder: not folder.exists(), out_dir.parents))
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_if_empty(missing)
        raise
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """Remove `make_parents`'s folders, deepest first, as far as they are empty: one that another
    export has filled meanwhile stays, and so do those above it."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:
            return


def remove_dead_leftovers(out_dir: Path) -> None:
    """Remove the `.tmp-<pid>`/`.old-<pid>` folders of out_dir that killed exporters left.

    One goes only when its pid is not alive here (or is ours: a dead process's pid reused) and
    nobody holds its lock: a live concurrent export keeps its folders.
    """
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:tmp|old)-(\d+)")
    for path in out_dir.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if not found or path.is_symlink() or not path.is_dir():
            continue
        pid = int(found.group(1))
        if pid != os.getpid() and locks.alive(pid):
            continue
        try:
            lock = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue  # not ours to open: not ours to remove
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            continue  # a live exporter holds it
        except OSError:
            pass  # no locks on this file system: the pid alone decides
        shutil.rmtree(path, ignore_errors=True)
        os.close(lock)


def apply_umask(folder: Path) -> None:
    """Give every file in `folder` the mode a plain `open()` would: 0666 less the umask.

    safetensors >= 0.8 writes `model.safetensors` through a temporary file that is always 0600
    and renames it into place (safetensors/safetensors#782), so the weights alone would be
    unreadable to the other users who can read the rest of the export.
    """
    umask = os.umask(0o077)  # the only way to read it; restored at once
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


def replace_folder(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an existing out_dir is moved aside first, and put
    back if the rename fails or is interrupted (Ctrl-C between the two renames): a `.old-<pid>`
    left behind would be removed by the next export as a dead exporter's."""
    old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
    if out_dir.exists():
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old.exists():
            os.replace(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def swap_lock(out_dir: Path) -> Iterator[None]:
    """Hold an flock on out_dir's parent while an exporter checks out_dir once more and renames
    its folder into place. `checked_out_dir` runs before the minutes of loading and checking;
    without this, the later of two exports to one new out_dir replaced the earlier one's folder
    unseen, and both said they had exported there. Another exporter holds it for a rename; a
    holder that is no exporter (`flock <folder> <command>` in a job script) is waited for
    `SWAP_LOCK_WAIT_S`, then the check and the rename go on without it."""
    fd: int | None = None
    with contextlib.suppress(OSError):  # no locks on this file system: the check alone
        fd = os.open(out_dir.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + SWAP_LOCK_WAIT_S
        while fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning(
                        "%s is locked by another process: renaming without the lock", out_dir.parent
                    )
                    break
                time.sleep(0.1)
            except OSError:
                break
        yield
    finally:
        if fd is not None:
            os.close(fd)
