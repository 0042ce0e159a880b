"""A SLURM (submitit) job that runs out of time or is preempted: save on every rank, then requeue.

submitit signals its jobs near the time limit or on preemption (SIGUSR2 by default) and handles
the signal itself: on global rank 0 it requeues the job and exits at once, in the middle of a
step, so nothing is saved, the other ranks hang in their collectives, and the sweep records the
job as failed. Here submitit's handler is kept but held back:

- `hold_submitit_requeue` (at process start) takes submitit's handler out of the signal's slot.
  Outside the training steps (setup, the final validation) the signal still requeues at once
  (nothing new would be saved), after marking the run folder.
- During training, `PreemptionCheckpoint` notes the signal; all ranks agree on it at the next
  step, save `last.ckpt` and raise `Preempted` (lmtrain.callbacks.preemption).
- `requeue_after_stop` then calls submitit's own handler on rank 0 (its launcher's `checkpoint`,
  its `max_num_timeout` count, `scontrol requeue` on SLURM, exit 144 locally), while the other
  ranks wait for it. The next attempt finds the marker (or SLURM_RESTART_COUNT) and resumes
  from the newest of `last.ckpt` and Lightning's `hpc_ckpt_*.ckpt` (`resume_after_requeue`),
  leaving out an `hpc_ckpt` written inside a training step (it would not resume exactly).

submitit's local executor sets nothing new on a requeue (no SLURM_RESTART_COUNT), so the marker
`<run folder>/requeued` holds the submitit job id, which stays the same across attempts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from lmtrain.lightning_compat.hpc_checkpoint import saved_inside_training_batch
from lmtrain.utils.checks import strict_bool
from lmtrain.utils.outside_checkpoints import configured_dirpath, outside_folder, written_by_run_in
from lmtrain.utils.safe_load import saved_state, saved_step

log = logging.getLogger(__name__)

MARKER = "requeued"
Handler = Callable[[int, FrameType | None], Any]
# submitit's requeue handler, taken out of its signal's slot by hold_submitit_requeue.
_submitit_handler: Handler | None = None
# A SystemExit from submitit's requeue is on its way out: a sweep job must not score it.
requeue_in_flight = False


def submitit_signal() -> signal.Signals | None:
    """The signal submitit requeues on (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise),
    in a submitit job; None elsewhere."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    import submitit

    return signal.Signals(submitit.JobEnvironment._usr_sig())


def hold_submitit_requeue(run_dir: Path) -> None:
    """Keep submitit's requeue handler for `requeue_after_stop`; until training's own handler
    takes the signal, it requeues at once, after marking `run_dir`."""
    global _submitit_handler
    signum = submitit_signal()
    handler = signal.getsignal(signum) if signum else None
    if getattr(handler, "__name__", "") != "checkpoint_and_try_requeue" or not callable(handler):
        return  # not a submitit task (a plain run, torchrun, Lightning's ranks > 0)
    _submitit_handler = handler

    def requeue_now(signum: int, frame: FrameType | None) -> None:
        global requeue_in_flight
        requeue_in_flight = True
        mark_requeued(run_dir)
        handler(signum, frame)  # rank 0 exits here; other ranks return

    signal.signal(signum, requeue_now)


def submitit_requeues() -> bool:
    """Whether a stop here is requeued by submitit (`requeue_after_stop`): not on a plain run
    or a basic launcher's sweep, where a preempted job ends the process."""
    return _submitit_handler is not None


def is_submitit_requeue_handler(handler: object) -> bool:
    """Whether `handler` requeues through submitit (its own, or `hold_submitit_requeue`'s):
    PreemptionCheckpoint does not chain it, the requeue comes after the save."""
    return handler is _submitit_handler or getattr(handler, "__name__", "") in (
        "checkpoint_and_try_requeue",
        "requeue_now",
    )


def mark_requeued(run_dir: Path) -> None:
    """Global rank 0 writes `<run folder>/requeued` with the submitit job id."""
    import submitit

    if rank_zero_only.rank == 0:
        (run_dir / MARKER).write_text(submitit.JobEnvironment().job_id + "\n")


def requeued(run_dir: Path) -> bool:
    """Whether this process is a requeued attempt of the job that ran in `run_dir`."""
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) >= 1:
        return True
    marker = run_dir / MARKER
    if not (os.environ.get("SUBMITIT_EXECUTOR") and marker.is_file()):
        return False
    import submitit

    return marker.read_text().strip() == submitit.JobEnvironment().job_id


def requeue_after_stop(signum: int, run_dir: Path) -> str | None:
    """After a stop every rank agreed on (all saved `last.ckpt`): requeue through submitit.

    Rank 0 leaves by submitit's SystemExit; the other ranks wait for rank 0 to get there (a
    rank exiting first could make srun end the job step before the requeue) and return None.
    Returns why the job was not requeued (out of `max_num_timeout`, scontrol failed), on every
    rank; None when it was, or when this is not a submitit job (then nothing happens).
    """
    global requeue_in_flight
    if _submitit_handler is None:
        return None
    import submitit
    import torch.distributed as dist

    ranks_are_tasks = submitit.JobEnvironment().num_tasks > 1
    together = ranks_are_tasks and dist.is_available() and dist.is_initialized()
    outcome: list[str | None] = [None]
    try:
        if rank_zero_only.rank == 0:
            mark_requeued(run_dir)
            requeue_in_flight = True
            try:
                _submitit_handler(signum, None)  # does not return once requeued
            except (submitit.core.utils.UncompletedJobError, subprocess.SubprocessError) as err:
                outcome = [str(err).strip() or type(err).__name__]
                requeue_in_flight = False
    finally:
        if together:
            dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        log.error("The job was stopped but not requeued: %s", outcome[0])
    return outcome[0]


def resume_after_requeue(cfg: DictConfig) -> None:
    """A requeued SLURM job runs again in the same run folder: set `ckpt_path` to the newest of
    its `checkpoints/last.ckpt` and Lightning's auto-requeue saves (`hpc_ckpt_*.ckpt`).

    An `hpc_ckpt` that Lightning's SIGUSR1 handler wrote inside a training step (the job killed
    before the preemption's last.ckpt that follows) is never resumed from: its restart is not
    the uninterrupted run's (`written_inside_training_batch`). The save before it is, exactly,
    or, with none, step 0.

    A requeue is told by SLURM_RESTART_COUNT, or by the marker submitit jobs leave
    (`lmtrain.utils.requeue.requeued`); an `hpc_ckpt_*.ckpt` under SLURM tells it too, unless
    the job asks for a new run (`overwrite_run=true`). Lightning
    would take the newest `hpc_ckpt` by itself, even when a later preemption saved a newer
    `last.ckpt` (the SIGTERM that follows `scontrol requeue` does), and would load it again for
    the final validation: lmtrain chooses here and Lightning loads only what it is given
    (`lightning_compat.resume_only_from_given_checkpoints`).
    """
    run_dir = Path(cfg.paths.output_dir)
    if cfg.get("ckpt_path"):
        return
    hpc = list(run_dir.glob("hpc_ckpt_*.ckpt")) if SLURMEnvironment.detect() else []
    # A new job in the folder with overwrite_run=true starts its own run, saves or not.
    new_run = strict_bool("overwrite_run", cfg.get("overwrite_run", False))
    if not requeued(run_dir) and (new_run or not hpc):
        return
    last = run_dir / "checkpoints" / "last.ckpt"
    # Saved to a dirpath outside the run folder (scratch storage), where a preemption saves too:
    # that last.ckpt, named (train()'s `last` looks in the run folder), when this run wrote it.
    elsewhere = outside_folder(configured_dirpath(cfg, run_dir), run_dir)
    if elsewhere is not None and written_by_run_in(elsewhere / "last.ckpt", run_dir):
        last = elsewhere / "last.ckpt"
    # Lightning's SIGUSR1 saves written inside a training step do not resume exactly.
    cut = [path for path in hpc if written_inside_training_batch(path)]
    if cut and rank_zero_only.rank == 0:
        log.warning(
            "Requeued SLURM job: not resuming from %s, saved by Lightning's SIGUSR1 handler "
            "inside a training step (its restart validates at other steps than the "
            "uninterrupted run); an older save is resumed from, if any",
            ", ".join(path.name for path in cut),
        )
    saves = {
        path: newness(path, last) for path in [*hpc, last] if path.exists() and path not in cut
    }
    if not saves:
        # Killed between its first best-*.ckpt and last.ckpt, or `save_last: false`: "last"
        # resumes from the newest checkpoint there (models.checkpoint_paths.locate_checkpoint).
        if any(last.parent.glob("*.ckpt")):
            log.info("Requeued SLURM job: resuming from the newest checkpoint in %s", last.parent)
            cfg.ckpt_path = "last"
        elif rank_zero_only.rank == 0:  # stopped before its first save, or a folder of its own
            log.warning("Requeued SLURM job, but %s holds no save: it starts from step 0", run_dir)
        return
    newest = max(saves, key=saves.__getitem__)
    log.info("Requeued SLURM job: resuming from %s, its newest save", newest)
    cfg.ckpt_path = "last" if newest == run_dir / "checkpoints" / "last.ckpt" else str(newest)


def newness(path: Path, last: Path) -> tuple[bool, int, int, bool]:
    """How `path` ranks among a requeued job's saves, the newest highest: a readable one, then
    the second it was written, then the step it was saved at, then last.ckpt. Saves written in
    the same second (coarse file-system times, a folder copied without its times) were ranked
    by the order they were listed in: an older hpc_ckpt was resumed from, and the newer
    last.ckpt overwritten. A save whose step cannot be read (damaged) ranks below the rest."""
    step = saved_step(path)
    return step is not None, int(modified_at(path)), -1 if step is None else step, path == last


def written_inside_training_batch(path: Path) -> bool:
    """Whether the save at `path` was written while a training batch was under way, as
    Lightning's SIGUSR1 handler writes `hpc_ckpt_*.ckpt` wherever the signal lands: its weights,
    optimizer and callback states may be those of a step half done, and Lightning's restart
    counts that batch twice against `val_check_interval`
    (`lightning_compat.hpc_checkpoint.saved_inside_training_batch`)."""
    state = saved_state(path)
    return state is not None and saved_inside_training_batch(state)


def modified_at(path: Path) -> float:
    """When a checkpoint file, or a sharded checkpoint folder's newest file, was written."""
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    return max((p.stat().st_mtime for p in files), default=path.stat().st_mtime)
