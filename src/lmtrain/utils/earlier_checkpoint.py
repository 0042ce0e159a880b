"""Refuse to go back in a run's own folder without being told to.

`ckpt_path=<run>/checkpoints/step6.ckpt hydra.run.dir=<run>` resumes the run from an earlier
checkpoint of its own folder. That is how one rewinds a run after a loss spike, but it replaces
what the run did after that checkpoint: `last.ckpt` (say at step 12), the samples, the CSV rows and
`metrics.json` of the later steps, with only a warning about a missing best checkpoint. The
one-run-per-folder rule let it through, as the checkpoint lies in the folder, so it asks for
`overwrite_run=true` here.

`last.ckpt` is not the whole record: a run resumed with `callbacks.model_checkpoint=null` (or any
save turned off) trained on to step 8 and wrote its metrics.json there, leaving last.ckpt at step
4, and `ckpt_path=last` then went back to step 4 and rewrote steps 5-8 without a word. So the
step the run's metrics.json reports (written once, after the final validation: the step the run
ended at) counts too. The CSV's rows are not a record of an end: a killed run has rows past its
last save, and resuming it replays them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils.safe_load import saved_step


def same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve() or os.path.abspath(a) == os.path.abspath(b)


def refuse_going_back(folder: Path, ckpt_path: str | Path, key: str) -> None:
    """Raise LMTrainError when `ckpt_path`, a checkpoint in run folder `folder` (named by `key`),
    was saved at an earlier step than the folder's `checkpoints/last.ckpt`, or than the step its
    metrics.json reports the run ended at. A requeued SLURM job picks its own checkpoint and is
    not asked."""
    last, chosen = folder / "checkpoints" / "last.ckpt", Path(ckpt_path)
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        return
    later_last = last.exists() and not same_file(chosen, last)
    ended_step = metrics_step(folder)
    if not later_last and ended_step is None:
        return
    chosen_step = saved_step(chosen)
    if chosen_step is None:
        return  # an unreadable file is the loader's to name
    last_step = saved_step(last) if later_last else None
    if last_step is not None and chosen_step < last_step:
        raise LMTrainError(
            f"ckpt_path={chosen} (step {chosen_step}) would go on in {key}={folder}, whose "
            f"checkpoints/last.ckpt (step {last_step}) and records of the later steps it would "
            "replace: pass overwrite_run=true to go back to that step in this folder, or drop "
            f"{key} to go on from it in a new run folder"
        )
    if ended_step is not None and chosen_step < ended_step:
        raise LMTrainError(
            f"ckpt_path={chosen} is step {chosen_step}, behind the metrics.json of {key}="
            f"{folder} (step {ended_step}, where that run ended), whose samples, CSV rows and "
            "metrics of the later steps it would replace: pass "
            f"overwrite_run=true to go back to step {chosen_step} in this folder, or pass "
            "ckpt_path=<a checkpoint of a later step>"
        )


def metrics_step(folder: Path) -> int | None:
    """The step the run folder's metrics.json reports (`trainer/global_step`, written after the
    run's final validation), or None without a readable one."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    step = metrics.get("trainer/global_step") if isinstance(metrics, dict) else None
    if isinstance(step, bool) or not isinstance(step, int | float) or not math.isfinite(step):
        return None
    return int(step)
