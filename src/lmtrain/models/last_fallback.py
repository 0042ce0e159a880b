"""The last.ckpt a NaN-guard stop goes back to: the newest one whose weights gave a finite loss.

A save of step N holds the weights that step N+1's forward reads. When that forward gives a NaN
(at any learning rate: the rate does not enter it), last.ckpt of step N is the one checkpoint a
resume must not start from, yet a scheduled save (`every_n_train_steps`) or the save after a
validation had just replaced the good one of an earlier step with it. So, while the guard is on,
the last.ckpt a save replaces is kept as a hard link, `.last.ckpt.good` (no second copy on disk,
and no name that `ckpt_path=last` or Lightning's `last` looks for), until a loss from the new
save's weights comes out finite (`LastFallback.proven`): then it is removed. A stop whose weights
are the saved ones puts it back as last.ckpt (`restore_good_last`), so the line names a
checkpoint that goes on; after a first save there is none, and the line says so. Only a plain
local file is handled so: a sharded folder (trainer=fsdp) is kept as it was, as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.utils.safe_load import saved_step


def fallback_path(last: Path) -> Path:
    """Where the good last.ckpt waits while the newest save is unproven."""
    return last.with_name(f".{last.name}.good")


class LastFallback:
    """Which save's weights have not given a finite loss yet (`unproven`, its step), and the
    hard link of the last.ckpt before it, written and removed by rank 0."""

    def __init__(self) -> None:
        self.unproven: int | None = None

    def before_save(self, trainer: Any) -> None:
        """Before any checkpoint of step `global_step` is written (every rank): keep last.ckpt
        as the fallback when its weights are proven; an unproven one keeps the fallback before
        it (the weights of a run whose every batch is skipped never are)."""
        if self.unproven is None and trainer.is_global_zero:
            last = last_checkpoint_path(trainer)
            good = fallback_path(last)
            try:
                good.unlink(missing_ok=True)
                if last.is_file() and not last.is_symlink():
                    os.link(last, good)
            except OSError:  # a read-only folder, no hard links: the save itself says what
                pass  # is wrong (a stop without the fallback names last.ckpt as it is)
        if self.unproven is None:
            self.unproven = trainer.global_step

    def proven(self, trainer: Any, weights_step: int | None) -> None:
        """The weights of `weights_step` gave a finite training loss: a save of that step or
        before goes on, so the fallback is no longer needed."""
        if self.unproven is None or weights_step is None or weights_step < self.unproven:
            return
        self.unproven = None
        if trainer.is_global_zero:
            fallback_path(last_checkpoint_path(trainer)).unlink(missing_ok=True)

    def forget(self, trainer: Any) -> None:
        """At the end of training (no NaN can follow): the fallback goes."""
        self.unproven = None
        if trainer.is_global_zero:
            fallback_path(last_checkpoint_path(trainer)).unlink(missing_ok=True)


def restore_good_last(trainer: Any, bad_from: int) -> tuple[Path, int | None, str]:
    """(last.ckpt, its step now, what happened to it) at a stop whose NaN the weights of step
    `bad_from` and after give: `kept` when last.ckpt is older (or unreadable, or absent),
    `restored` when it held such weights and the fallback of an earlier step took its place,
    `holds` when no fallback did (a first save, or a resumed run's): it is kept, for a resume
    in skip mode past one bad batch. Rank 0 moves the files."""
    last = last_checkpoint_path(trainer)
    step = saved_step(last) if last.exists() else None  # a file, or a sharded folder
    held = step is not None and step >= bad_from
    good = fallback_path(last)
    if not good.is_file():
        return last, step, "holds" if held else "kept"
    good_step = saved_step(good)
    restore = held and good_step is not None and good_step < bad_from
    if trainer.is_global_zero:
        try:
            if restore:
                os.replace(good, last)
            else:
                good.unlink(missing_ok=True)
        except OSError:  # a folder gone read-only: last.ckpt stays as it is, and is named so
            restore = False
    if restore:
        return last, good_step, "restored"
    return last, step, "holds" if held else "kept"
