"""Why `resume=<run folder>` found no checkpoint of the run, when its saved config names a
`callbacks.model_checkpoint.dirpath` outside the folder: said in one line that names the folder
looked in, since "has no checkpoint in checkpoints/" was wrong there.

Two causes looked like a run that saved nothing. A relative dirpath means the folder the run
was launched from (Lightning resolves it against the working directory, and so does the
checkpoint's record of whose it is), so a resume from another working directory looked in
another folder; the line names the launch folder, as the data check does for a relative
`data.source.path`. And a checkpoint there names the run folder that wrote it, so a run folder
moved (or copied) since finds a checkpoint it cannot take as its own: taking another run's would
continue that run here and replace its checkpoints. The line names the folder the checkpoint
belongs to.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from lmtrain.models.checkpoint_paths import locate_checkpoint
from lmtrain.utils.checkpoint_dirpaths import KEY
from lmtrain.utils.outside_checkpoints import checkpoint_run, configured_dirpath, outside_folder
from lmtrain.utils.override_text import override_arg
from lmtrain.utils.sharded_layout import is_sharded_checkpoint

RECORD = ".hydra"  # where Hydra saved the run's config and its own (hydra.yaml: the launch folder)


def unfound_checkpoint(run_dir: Path) -> str | None:
    """Why the run in `run_dir`, whose saved config names a dirpath outside it, has no checkpoint
    `resume=` takes (the end of a one-line refusal, with what to do instead); None when its
    config names none (its checkpoints/ is where it saves) or cannot be read."""
    try:
        saved = OmegaConf.load(run_dir / RECORD / "config.yaml")
    except Exception:  # missing, unreadable, not YAML: the plain line says it
        return None
    dirpath = configured_dirpath(saved, run_dir)
    if dirpath is None or "://" in dirpath:
        return None
    launched, here = launch_folder(run_dir), os.getcwd()
    if not Path(dirpath).expanduser().is_absolute() and launched not in (None, here):
        return (
            f"it saved them to {KEY}={dirpath!r}, a folder relative to the one the run "
            f"was launched from, {launched}; this command runs in {here}, where it is "
            f"{Path(here) / dirpath}: run resume= from {launched}"
        )
    folder = outside_folder(dirpath, run_dir)
    if folder is None:
        return None
    return taken_or_not(folder, run_dir)


def taken_or_not(folder: Path, run_dir: Path) -> str:
    """Why no checkpoint in `folder` (the run's dirpath outside `run_dir`) is the run's."""
    path = locate_checkpoint("last", run_dir, strict=False, folder=folder)
    if not (path.is_file() or is_sharded_checkpoint(path)):
        return (
            f"it saved them to {KEY}={folder}, which holds none: pass the folder of a run "
            "that saved one, or start a new run without resume="
        )
    owner, _ = checkpoint_run(path)
    go_on = override_arg("ckpt_path", path)  # a line to paste (a folder with a space, a comma)
    if owner is None:
        return (
            f"it saved them to {KEY}={folder}, and {path} there names no run folder (not "
            f"an lmtrain run's): go on from it in a new run folder with {go_on} and no resume="
        )
    resume = override_arg("resume", owner)
    if owner.exists():
        return (
            f"it saved them to {KEY}={folder}, and {path} there is the run's in {owner}, "
            f"not this folder's (a copy?): resume that run with {resume}, or go on from the "
            f"file in a new run folder with {go_on}, a {KEY} of its own and no resume="
        )
    return (
        f"it saved them to {KEY}={folder}, and {path} there was saved by the run in "
        f"{owner}, which is gone (this folder, moved?): move this folder back to {owner} and "
        f"{resume}, or go on from the file in a new run folder with {go_on}, a "
        f"{KEY} of its own and no resume="
    )


def launch_folder(run_dir: Path) -> str | None:
    """The working directory the run was launched from, as Hydra recorded it
    (`hydra.runtime.cwd` in `.hydra/hydra.yaml`); None where not recorded."""
    try:
        cwd = OmegaConf.select(OmegaConf.load(run_dir / RECORD / "hydra.yaml"), "hydra.runtime.cwd")
    except Exception:  # missing, unreadable, not YAML
        return None
    return cwd if isinstance(cwd, str) and os.path.isabs(cwd) else None
