"""Which run of a run folder a checkpoint belongs to: a run id, new at each run's start.

`overwrite_run=true` starts a new run in a folder that holds another run's checkpoints, and
nothing is deleted first (docs/runs.md): the replaced run's `last.ckpt` stays until the new run
saves its own. Where a checkpoint lies (or, elsewhere, the run folder its stored config names)
cannot tell the two runs apart, so a new run killed before its first save was "resumed" from
the replaced run's last.ckpt: 20 old steps under the new config, the old run's best checkpoint
deleted as if it were the new run's (found by a red team).

So each run that starts training from scratch, or from another run's weights, gets an id:
`RunStart` writes it to `<run folder>/run_id` when training starts (when the new run's `.hydra/`
record replaces the old one: a run refused or killed before then leaves the replaced run whole)
and stores it in each of its checkpoints (its callback state). A resume keeps the id of the
checkpoint it restores. `refuse_replaced_run` stops a resume from a checkpoint whose id is not
the folder's, in one line, before any work; a folder without `run_id` (made before it existed)
resumes as before.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.errors import LMTrainError
from lmtrain.utils.checkpointless_run import RAN_WITHOUT, ran_without_checkpoints
from lmtrain.utils.io import atomic_write
from lmtrain.utils.safe_load import saved_state

RUN_ID_FILE = "run_id"  # in the run folder: the id of the run whose record the folder holds


class RunStart(Callback):
    """Gives a new run its id (in the run folder and in its checkpoints); a resume keeps its
    checkpoint's."""

    def __init__(self, output_dir: str | Path, resuming: bool) -> None:
        self.output_dir = Path(output_dir)
        self.resuming = resuming  # this run continues the folder's run (`resumes_run_in`)
        self.run_id: str | None = None if resuming else uuid.uuid4().hex

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.resuming:
            self.run_id = trainer.strategy.broadcast(self.run_id)  # every rank saves rank 0's
        # A resume keeps the folder's id, its checkpoint's; with overwrite_run=true, one from a
        # replaced run's checkpoint makes that run the folder's again.
        if not trainer.is_global_zero or folder_run_id(self.output_dir) == self.run_id:
            return
        if self.run_id is None:  # a checkpoint saved before run ids: none to compare with
            (self.output_dir / RUN_ID_FILE).unlink(missing_ok=True)
            return
        with atomic_write(self.output_dir / RUN_ID_FILE) as file:
            file.write(f"{self.run_id}\n")

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.resuming:  # a new run from another run's weights keeps its own id
            self.run_id = state_dict.get("run_id")


def folder_run_id(output_dir: str | Path) -> str | None:
    """The id of the run that started last in `output_dir`; None if none recorded one."""
    try:
        return (Path(output_dir) / RUN_ID_FILE).read_text().strip() or None
    except OSError:
        return None


def checkpoint_run_id(ckpt_path: str | Path) -> str | None:
    """The run id stored in the checkpoint at `ckpt_path`; None if it has none."""
    state = saved_state(ckpt_path) or {}
    callbacks = state.get("callbacks")
    own = callbacks.get(RunStart.__qualname__) if isinstance(callbacks, dict) else None
    run_id = own.get("run_id") if isinstance(own, dict) else None
    return run_id if isinstance(run_id, str) else None


def refuse_replaced_run(
    output_dir: str | Path, ckpt_path: str | Path, key: str, overwrite: bool
) -> None:
    """Raise LMTrainError when `ckpt_path`, a checkpoint of the run folder `output_dir`'s run
    by where it lies, was saved by a run that a later one (`overwrite_run=true`) replaced;
    `overwrite` (overwrite_run=true again) lets the replaced run go on there."""
    recorded = folder_run_id(output_dir)
    if overwrite or recorded is None or checkpoint_run_id(ckpt_path) == recorded:
        return
    if ran_without_checkpoints(output_dir):
        raise LMTrainError(
            f"{ckpt_path} is the checkpoint of a run that a later run in {key}={output_dir} "
            f"replaced (overwrite_run=true), and that later run {RAN_WITHOUT}: start a new run "
            f"(another {key}, or overwrite_run=true to replace its files)"
        )
    raise LMTrainError(
        f"{ckpt_path} is the checkpoint of a run that a later run in {key}={output_dir} "
        "replaced (overwrite_run=true), and that run saved no checkpoint (it stopped before "
        "its first save): nothing of it to resume from; start it again with overwrite_run=true "
        f"(replaces its files), or in another {key}"
    )
