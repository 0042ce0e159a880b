"""Refuse to go back in a run's own folder without being told to.

`ckpt_path=<run>/checkpoints/step6.ckpt hydra.run.dir=<run>` resumes the run from an earlier
checkpoint of its own folder. That is how one rewinds a run after a loss spike, but it replaces
what the run did after that checkpoint: `last.ckpt` (say at step 12), the samples, the CSV rows and
`metrics.json` of the later steps, with only a warning about a missing best checkpoint. The
one-run-per-folder rule let it through, as the checkpoint lies in the folder, so it asks for
`overwrite_run=true` here.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils.safe_load import saved_step


def same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or os.path.abspath(a) == os.path.abspath(b)


def refuse_going_back(folder: Path, ckpt_path: str | Path, key: str) -> None:
    """Raise LMTrainError when `ckpt_path`, a checkpoint in run folder `folder` (named by `key`),
    was saved at an earlier step than the folder's `checkpoints/last.ckpt`. A requeued SLURM job
    picks its own checkpoint and is not asked."""
    last, chosen = folder / "checkpoints" / "last.ckpt", Path(ckpt_path)
    requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
    if requeued or not last.exists() or same_file(chosen, last):
        return
    chosen_step, last_step = saved_step(chosen), saved_step(last)
    if chosen_step is None or last_step is None or chosen_step >= last_step:
        return  # an unreadable file is the loader's to name
    raise LMTrainError(
        f"ckpt_path={chosen} (step {chosen_step}) would go on in {key}={folder}, whose "
        f"checkpoints/last.ckpt (step {last_step}) and records of the later steps it would "
        "replace: pass overwrite_run=true to go back to that step in this folder, or drop "
        f"{key} to go on from it in a new run folder"
    )
