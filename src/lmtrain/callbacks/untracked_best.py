"""The best checkpoints a resumed run stops tracking when it ranks by another monitor or mode.

Lightning keys a ModelCheckpoint's saved state by its monitor and mode (among other settings).
Resumed with `monitor=val/ppl` where the run ranked by `val/loss`, the callback finds no state of
its own, starts its ranking afresh, and never removes the run's earlier best checkpoint: with
`save_top_k: 1` two best-* files stayed, one of them forgotten for good, and nothing said so.
The old scores rank by another metric or direction, so they cannot be carried over, and the files
are the user's, so they are not deleted either: the resume names them in one warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fsspec.utils import get_protocol
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lmtrain.callbacks.checkpoint_state import moved_to, ranked_paths, ranking, same_ranking
from lmtrain.utils.contained_paths import lies_in
from lmtrain.utils.sharded_layout import is_sharded_checkpoint


def untracked_best(
    trainer: Trainer, states: dict[str, Any], dirpath: str | None
) -> dict[str, list[str]]:
    """By the state key of each ModelCheckpoint state that no checkpoint callback of `trainer`
    restores: the best checkpoints it ranks that are still on disk in `dirpath`.

    A state is restored when a callback has its key, or ranks alike (`StepScheduledCheckpoint`
    takes such a state over from another `every_n_train_steps`). The checkpoint is untrusted:
    only files inside `dirpath` are named (after a moved run folder is followed), never removed.
    """
    callbacks = trainer.checkpoint_callbacks
    left: dict[str, list[str]] = {}
    for key, state in states.items():
        if ranking(key) is None or not isinstance(state, dict) or not dirpath:
            continue
        if any(
            key == cb.state_key or same_ranking(key, cb.monitor, cb.mode)
            for cb in callbacks
            if isinstance(cb, ModelCheckpoint)
        ):
            continue
        files = []
        for path in ranked_paths(moved_to(state, dirpath)):
            if not isinstance(path, str) or get_protocol(path) != "file":
                continue
            local = Path(path.removeprefix("file://"))
            on_disk = local.is_file() or is_sharded_checkpoint(local)
            if on_disk and lies_in(path, dirpath) and path not in files:
                files.append(path)
        if files:
            left[key] = sorted(files)
    return left


def warn_untracked(trainer: Trainer, callback: ModelCheckpoint, states: dict[str, Any]) -> None:
    """One warning (rank 0) naming the best checkpoints a resume with another monitor or mode
    leaves on disk untracked, and what to do about them."""
    left = untracked_best(trainer, states, callback.dirpath)
    if not left:
        return
    rankings = sorted({"monitor={!r}, mode={!r}".format(*(ranking(k) or ())) for k in left})
    files = sorted({path for paths in left.values() for path in paths})
    rank_zero_warn(
        f"The checkpoint resumed from ranked its best checkpoints by {' and '.join(rankings)}, "
        f"this run by monitor={callback.monitor!r}, mode={callback.mode!r}: "
        f"{', '.join(repr(p) for p in files)} are no longer tracked, and stay beside this run's "
        "own best-* files (save_top_k does not count them); move them away or delete them by "
        "hand if they are not wanted"
    )
