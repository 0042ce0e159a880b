"""Where a run's checkpoints live: `checkpoints/last.ckpt`, what `ckpt_path=last` finds when a
save was cut short, and the temporary and previous names of a sharded checkpoint folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmtrain.utils.sharded_layout import is_sharded_checkpoint


def last_checkpoint_path(trainer: Any) -> Path:
    """`<trainer.default_root_dir>/checkpoints/last.ckpt`: the run folder's file that
    `ckpt_path=last` resumes from (the trainer config sets default_root_dir to the run folder)."""
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def locate_checkpoint(ckpt_path: str, output_dir: str | Path, strict: bool = True) -> Path:
    """The path `ckpt_path` names (`last`: the run folder's checkpoints/last.ckpt), unchecked.

    When a sharded last.ckpt is missing but its previous copy is there (a save killed between
    its two renames, see `previous_sharded`), that copy; when there is no last.ckpt at all, the
    newest other checkpoint (`newest_checkpoint`; `strict`: refusing an ambiguous one, as the
    run to resume does; `resume=latest` only ranks folders by it).
    """
    if ckpt_path != "last":
        return Path(ckpt_path).expanduser()
    path = Path(output_dir) / "checkpoints" / "last.ckpt"
    if not path.exists() and is_sharded_checkpoint(previous_sharded(path)):
        return previous_sharded(path)
    if not path.exists():
        return newest_checkpoint(path.parent, strict) or path
    return path


def newest_checkpoint(folder: Path, strict: bool = True) -> Path | None:
    """The checkpoint `folder` holds that was written last, when it holds no last.ckpt.

    A run's first last.ckpt comes after its first best checkpoint (Lightning saves the top k,
    then last), so a run killed between the two, or one with `save_last: false`, left only
    best-* files: each whole (saves are atomic) and resumable. Chosen by time written, as
    Lightning's own `ckpt_path="last"` chooses among last checkpoints.

    Times lie once a folder is copied without them (or the clock went back): a red team's
    copied run resumed from step 5 of 15, retrained ten steps and overwrote the later saves. A
    newest file that is not the furthest one (an older step than another save) is ambiguous,
    as after a rewind with overwrite_run=true: the user names the one to resume from."""
    from lmtrain.errors import LMTrainError
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
            f"from, ckpt_path=<file> hydra.run.dir={folder.parent} (without resume=)"
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
