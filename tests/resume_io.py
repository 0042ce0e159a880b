"""Test-only pieces of tests/test_resume.py: a CheckpointIO that stops a run in the middle of a
save, and a callback that writes the final weights.

Added to a run with `'trainer.plugins=[{_target_:tests.resume_io.PausingCheckpointIO,...}]'`:
on the `pause_at`-th save of `last.ckpt` it writes the temporary file in full, then writes
`marker` (holding the temporary file's path) and sleeps before the rename, so the test can
kill -9 the run at the moment a non-atomic save would leave a half-written `last.ckpt`.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.utils.checkpoint_io import AtomicCheckpointIO


class PausingCheckpointIO(AtomicCheckpointIO):
    def __init__(self, marker: str, pause_at: int = 2) -> None:
        super().__init__()
        self.marker = Path(marker)
        self.pause_at = pause_at
        self.saves = 0

    def before_replace(self, tmp: Path, target: Path) -> None:
        if target.name != "last.ckpt":
            return
        self.saves += 1
        if self.saves == self.pause_at:
            self.marker.write_text(str(tmp))
            time.sleep(600)  # the test kills the run here


class SaveFinalWeights(Callback):
    """Writes the weights at the end of training to `path` (rank 0).

    The last checkpoint is not always the final step: ModelCheckpoint defers a save at an
    epoch's last batch to a validation that `max_steps` may cut off.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            final = {"step": trainer.global_step, "state_dict": pl_module.state_dict()}
            torch.save(final, self.path)
