"""Where a run's checkpoints live: `checkpoints/last.ckpt` (or last.ckpt in a
`callbacks.model_checkpoint.dirpath` outside the run folder, as on a scratch disk), what
`ckpt_path=last` finds when a save was cut short, and the temporary and previous names of a
sharded checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.checkpoint_dirpaths import KEY
from lmtrain.utils.lightning_keywords import refuse_lightning_keyword as refuse_lightning_keyword
from lmtrain.utils.outside_checkpoints import (
    checkpoint_run,
    configured_dirpath,
    outside_folder,
    written_by_run_in,
)
from lmtrain.utils.override_text import override_arg
from lmtrain.utils.sharded_layout import is_sharded_checkpoint


def last_checkpoint_path(trainer: Any) -> Path:
    """The file `ckpt_path=last` resumes from, where preemption and NaN-guard saves go:
    last.ckpt in the checkpoint callback's dirpath when that lies outside the run folder
    (`trainer.default_root_dir`, which the trainer config sets to it), else in the run
    folder's checkpoints/."""
    dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
    folder = outside_folder(dirpath, trainer.default_root_dir)
    return (folder or Path(trainer.default_root_dir) / "checkpoints") / "last.ckpt"


def locate_checkpoint(
    ckpt_path: str, output_dir: str | Path, strict: bool = True, folder: Path | None = None
) -> Path:
    """The path `ckpt_path` names (`last`: the run folder's checkpoints/last.ckpt, or last.ckpt
    in `folder`, where the run saves its checkpoints elsewhere), unchecked.

    When a sharded last.ckpt is missing but its previous copy is there (a save killed between
    its two renames, see `previous_sharded`), that copy; when there is no last.ckpt at all, the
    newest other checkpoint (`newest_checkpoint`; `strict`: refusing an ambiguous one, as the
    run to resume does; `resume=latest` only ranks folders by it).
    """
    if ckpt_path != "last":
        return Path(ckpt_path).expanduser()
    path = (folder or Path(output_dir) / "checkpoints") / "last.ckpt"
    if not path.exists() and is_sharded_checkpoint(previous_sharded(path)):
        return previous_sharded(path)
    if not path.exists():
        return newest_checkpoint(path.parent, strict, Path(output_dir)) or path
    return path


def last_elsewhere(dirpath: str | None, run_dir: Path, overwrite: bool = False) -> Path | None:
    """The checkpoint `ckpt_path=last` resumes from when the command saves checkpoints to
    `dirpath` (its `callbacks.model_checkpoint.dirpath`) outside the run folder `run_dir`, as
    Lightning's own `last` looks in the dirpath; None for a dirpath inside the run folder (the
    run folder's checkpoints/ are `locate_checkpoint`'s, as before).

    Refused in one line: a dirpath that holds no checkpoint; one whose checkpoint the run in
    `run_dir` did not save there (another run's in a shared dirpath: taking it would continue
    that run here and replace its checkpoints), unless `overwrite`; and a remote dirpath
    (`s3://...`), which lmtrain does not read, when the run folder holds no checkpoint either.
    """
    if dirpath and "://" in dirpath:
        found = locate_checkpoint("last", run_dir, strict=False)
        if found.is_file() or is_sharded_checkpoint(found):
            return None  # a preemption's save in the run folder: resumed from as before
        raise LMTrainError(
            f"ckpt_path=last looks in the run folder and in a local {KEY}, not in {dirpath}: "
            f"copy the checkpoint to resume from to this machine and pass ckpt_path=<that file>"
        )
    folder = outside_folder(dirpath, run_dir)
    if folder is None:
        return None
    path = locate_checkpoint("last", run_dir, folder=folder)
    if not (path.is_file() or is_sharded_checkpoint(path)):
        raise LMTrainError(
            f"ckpt_path=last found no checkpoint in {KEY}={folder}, where this command saves "
            f"them: pass the {KEY} the run saved its checkpoints to, or ckpt_path=<file>"
        )
    if overwrite or written_by_run_in(path, run_dir):
        return path
    owner, _ = checkpoint_run(path)
    if owner is not None and owner.resolve() != run_dir.resolve():
        whose = f"a checkpoint of the run in {owner}, not of hydra.run.dir={run_dir}: resume "
        whose += f"that run with hydra.run.dir={owner},"
    else:  # this run's, moved or copied there, or no lmtrain run's
        whose = f"which the run in hydra.run.dir={run_dir} did not save there (a copy?):"
    raise LMTrainError(
        f"ckpt_path=last found {path}, {whose} give this run a {KEY} of its own, or pass "
        f"overwrite_run=true to go on from that checkpoint here, replacing those in {folder}"
    )


def saved_checkpoint_folder(run_dir: Path) -> Path | None:
    """The dirpath outside `run_dir` that the run's saved config (`.hydra/config.yaml`) names,
    when it holds a checkpoint that run saved there (`written_by_run_in`): where `resume=` finds
    the run's checkpoints. That config is data: any other dirpath is not trusted, nor read."""
    try:
        saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    except Exception:  # missing, unreadable, not YAML
        return None
    folder = outside_folder(configured_dirpath(saved, run_dir), run_dir)
    if folder is None:
        return None
    path = locate_checkpoint("last", run_dir, strict=False, folder=folder)
    return folder if path.exists() and written_by_run_in(path, run_dir) else None


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint `resume=<run_dir>` goes on from (unchecked): in its checkpoints/, else in
    the dirpath elsewhere that its saved config names (`saved_checkpoint_folder`)."""
    path = locate_checkpoint("last", run_dir, strict=False)
    if path.is_file() or is_sharded_checkpoint(path):
        return path
    folder = saved_checkpoint_folder(run_dir)
    return path if folder is None else locate_checkpoint("last", run_dir, False, folder)


def newest_checkpoint(
    folder: Path, strict: bool = True, run_dir: Path | None = None
) -> Path | None:
    """The checkpoint `folder` holds that was written last, when it holds no last.ckpt.

    A run's first last.ckpt comes after its first best checkpoint (Lightning saves the top k,
    then last), so a run killed between the two, or one with `save_last: false`, left only
    best-* files: each whole (saves are atomic) and resumable. Chosen by time written, as
    Lightning's own `ckpt_path="last"` chooses among last checkpoints.

    Times lie once a folder is copied without them (or the clock went back): a red team's
    copied run resumed from step 5 of 15, retrained ten steps and overwrote the later saves. A
    newest file that is not the furthest one (an older step than another save) is ambiguous,
    as after a rewind with overwrite_run=true: the user names the one to resume from
    (`run_dir`: the run folder, when `folder` is not its checkpoints/)."""
    from lmtrain.utils.safe_load import saved_step

    found = [
        p
        for p in folder.glob("*.ckpt")
        if not p.name.startswith(".") and (p.is_file() or is_sharded_checkpoint(p))
    ]
    newest = max(found, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
    if newest is None or len(found) == 1 or not strict:
        return newest
    steps = {p: -1 if (step := saved_step(p)) is None else step for p in found}  # -1: unreadable
    furthest = max(found, key=lambda p: (steps[p], p.name))
    if steps[newest] < steps[furthest]:
        raise LMTrainError(
            f"{folder} has no last.ckpt, and its newest file {newest.name} (step "
            f"{steps[newest]}) is not its furthest, {furthest.name} (step {steps[furthest]}; "
            "copied without its times, or from a rewound run): pass the checkpoint to resume "
            f"from, ckpt_path=<file> hydra.run.dir={run_dir or folder.parent} (without resume=)"
        )
    return newest


def temporary_sharded(path: Path) -> Path:
    """Where a sharded checkpoint `path` is written before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp")


def previous_sharded(path: Path) -> Path:
    """Where the previous `path` waits while a new one is renamed into place (removed after).

    A kill between the two renames leaves only this one: `ckpt_path=last` then resumes from it.
    """
    return path.with_name(f".{path.name}.old")


def refuse_dirpath_left_out(output_dir: Path) -> None:
    """`ckpt_path=last` in a run folder whose run saved its checkpoints to a dirpath outside it,
    by a command that names no such dirpath: the line said the run saved nothing and offered
    `overwrite_run=true`, which would have replaced a resumable run."""
    elsewhere = saved_checkpoint_folder(output_dir)
    if elsewhere is not None:
        raise LMTrainError(
            f"ckpt_path=last: the run in {output_dir} saved its checkpoints to {KEY}="
            f"{elsewhere}, which this command does not name: pass {KEY}={elsewhere} too, or "
            f"resume with {override_arg('resume', output_dir)}"
        )


def refuse_special_file(given: str, path: Path, instead: str = "a .ckpt file") -> None:
    """Raise LMTrainError for a `ckpt_path` that exists but is neither a file nor a folder
    (/dev/null, a FIFO, a socket): the checks for a file or a folder read it as missing, and
    the line said it "does not exist", which the user can see is wrong. Not opened: a FIFO
    would block the reader."""
    if path.exists() and not (path.is_file() or path.is_dir()):
        raise LMTrainError(
            f"ckpt_path={given!r} is not a regular file (a device, a FIFO or a socket): "
            f"pass {instead}"
        )
