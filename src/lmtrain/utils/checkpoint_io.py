"""`AtomicCheckpointIO`: a checkpoint file is either the old one or the new one, never half, and
is read back with `weights_only=True` whatever the caller or the environment asks.

Lightning's `TorchCheckpointIO` opens the target and writes into it, so a run killed mid-save
(SIGKILL, OOM killer, preemption) leaves a truncated `last.ckpt` and nothing to resume from; here
the file goes through `lmtrain.utils.io.atomic_write` (temporary file, fsync, rename).

Resuming (`trainer.fit(ckpt_path=...)`) reads the file through `load_checkpoint`: Lightning
passes `weights_only=None`, which torch turns into False when `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`
is set, and into False for an http(s) URL, where a crafted checkpoint runs its code.

Wired in through `configs/trainer/default.yaml` (`plugins:`). FSDP's sharded checkpoints are
folders written by torch.distributed.checkpoint and do not pass through here.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from lmtrain.errors import LMTrainError
from lmtrain.utils.io import atomic_write, no_space, temporary_path
from lmtrain.utils.resume_hints import resume_hint
from lmtrain.utils.safe_load import checkpoint_error, refused_global
from lmtrain.utils.sharded_layout import is_sharded_checkpoint
from lmtrain.utils.task import refused_write
from lmtrain.utils.tensor_digest import add_digest, verify


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` with write-to-temporary, fsync and rename for local files."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        fs, local_path = fsspec.core.url_to_fs(str(path))
        if not isinstance(fs, LocalFileSystem):
            # Remote stores (s3://, ...) have no atomic rename; Lightning's own save is their best.
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(local_path)
        add_digest(checkpoint)  # checked by every reader (lmtrain.utils.tensor_digest)
        try:
            with atomic_write(target, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
                self.before_replace(temporary_path(target), target)
        except (OSError, RuntimeError) as err:
            refusal = checkpoint_full_disk_error(target, err) or checkpoint_unwritable_error(
                target, err
            )
            if refusal is None:
                raise
            raise refusal from None

    @override
    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Any = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Lightning's load with `weights_only=True` always; a refused pickle is one LMTrainError
        line (other failures are Lightning's)."""
        try:
            checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            if refused_global(err) is None:
                raise
            raise checkpoint_error(path, err, "checkpoint") from None
        verify(checkpoint, path)
        return checkpoint

    def before_replace(self, tmp: Path, target: Path) -> None:
        """Called with the complete temporary file, just before it replaces `target`.

        Does nothing; tests override it to kill a run at the worst moment of a save.
        """


def checkpoint_full_disk_error(
    target: Path,
    err: BaseException,
    error: type[LMTrainError] = LMTrainError,
    fix: str = "set callbacks.model_checkpoint.dirpath=<a folder on a disk with room>",
) -> LMTrainError | None:
    """One line for a checkpoint save that a full disk (or quota, or `ulimit -f`) stopped; None
    for any other failure. Saves go to a temporary file or folder: the target is untouched.
    `error`: RankAgreedError where every rank raises it together (a sharded save)."""
    if (found := no_space(err)) is None:
        return None
    return error(
        f"could not write the checkpoint {target} ({os.strerror(found.errno)}): free space in "
        f"{target.parent}, or {fix}; the checkpoints saved before it are intact"
    )


def checkpoint_unwritable_error(target: Path, err: BaseException) -> LMTrainError | None:
    """One line for a checkpoint save that the folder's modes or its file system refused (a
    folder made read-only mid-run, a disk remounted read-only); None for any other failure. The
    save went to a temporary file, so the checkpoints saved before it (an earlier version of
    `target` too) are intact, and the run resumes from them once the folder is writable."""
    if (found := refused_write(err)) is None:
        return None
    return LMTrainError(
        f"could not write the checkpoint {target} ({os.strerror(found.errno)}): make "
        f"{target.parent} writable, then {resume_from(target.parent)}; the checkpoints saved "
        "before it are intact"
    )


def resume_from(folder: Path) -> str:
    """How to resume from the checkpoints saved in `folder` (`run again` if it holds none): a
    run folder's `checkpoints/` with `ckpt_path=last`, which finds the newest one when there is
    no last.ckpt; another folder with its last.ckpt, else its newest file."""
    saved = [
        path for path in folder.glob("*.ckpt") if path.is_file() or is_sharded_checkpoint(path)
    ]
    if not saved:
        return "run again (no checkpoint of the run was saved there yet)"
    last = folder / "last.ckpt"
    if folder.name == "checkpoints" or last in saved:
        return resume_hint(last)
    return resume_hint(max(saved, key=lambda path: path.stat().st_mtime))


def read_weights_only(strategy: Any) -> None:
    """Give a plain Trainer (lmtrain from Python) this CheckpointIO in place of Lightning's
    default, so that `trainer.fit(..., ckpt_path=...)` reads weights-only there too, and saves
    atomically. Called from `CausalLMModule.setup`, which Lightning runs before it restores a
    checkpoint. A CheckpointIO the user chose, or a sharded strategy's own, is left alone."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()
