"""What to do instead of reading a damaged checkpoint: the advice of every line that refuses one.

The advice used to be the same everywhere ("pass a checkpoint written by lmtrain.train, e.g.
<run folder>/checkpoints/last.ckpt"), which for a damaged last.ckpt named the damaged file
itself; and "ckpt_path=<a best checkpoint>" is refused beside `resume=`. Found by a red team:
what works for a damaged last.ckpt is to move it aside, after which `resume=` and `ckpt_path=last`
go on from the newest other checkpoint of the folder.
"""

from __future__ import annotations

from pathlib import Path

from lmtrain.utils.sharded_layout import is_sharded_checkpoint

WRITTEN_BY = "pass a checkpoint written by lmtrain.train, e.g. <run folder>/checkpoints/last.ckpt"


def newest_other(damaged: Path) -> Path | None:
    """The newest other checkpoint beside `damaged` (a `*.ckpt` file, or a sharded folder), by
    time written, as `resume=` picks one without a last.ckpt
    (`lmtrain.models.checkpoint_paths.newest_checkpoint`, a layer above this one), but never an
    empty file (a copy cut short): the advice names one that can be read. None when there is
    none or the folder cannot be read."""
    try:
        found = [
            p
            for p in damaged.parent.glob("*.ckpt")
            if p.name != damaged.name
            and not p.name.startswith(".")
            and ((p.is_file() and p.stat().st_size > 0) or is_sharded_checkpoint(p))
        ]
        return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name), default=None)
    except OSError:
        return None


def sharded_folder_of(path: Path) -> Path | None:
    """The sharded checkpoint folder (trainer=fsdp: `.metadata`, `meta.pt`, `*.distcp`) that
    `path`, a shard, is one file of, else None: a shard given as ckpt_path read as a damaged zip
    file."""
    folder = path.parent
    if path.suffix != ".distcp":  # meta.pt and .metadata are read as the folder's, and named so
        return None
    try:
        sharded = is_sharded_checkpoint(folder) and (folder / ".metadata").is_file()
    except OSError:
        return None
    return folder if sharded and path.is_file() else None


def instead(damaged: str | Path) -> str:
    """The advice for the damaged checkpoint `damaged`: for a run's last.ckpt, to move it aside
    so that `resume=` takes the newest other checkpoint; else to pass that one. For one file of
    a sharded folder: the folder, or its consolidated file."""
    path = Path(damaged)
    folder = sharded_folder_of(path)
    if folder is not None:
        return (
            f"it is one file of the sharded checkpoint {folder} (trainer=fsdp): pass the folder "
            "to resume with trainer=fsdp, or merge it into one file for eval, generate and "
            f"export with `python -m lmtrain.strategies consolidate {folder}`"
        )
    other = newest_other(path)
    if other is None:
        return WRITTEN_BY
    if path.name == "last.ckpt":
        return (
            f"move it aside (mv {path} {path}.damaged): resume= and ckpt_path=last then go on "
            f"from {other.name} (eval, generate, export: ckpt_path={other})"
        )
    return f"pass another checkpoint, e.g. ckpt_path={other}"
