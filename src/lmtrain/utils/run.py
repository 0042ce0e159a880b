"""What every entry point does around its task: clean errors, a finished W&B run, output files.

A task that fails still closes its W&B run with the exit code (otherwise the offline run is left
"running" forever), and a user error prints one line instead of a traceback. Training also runs
as a sweep job, as one of several DDP processes and as a SLURM job that may be requeued; the
helpers after `task_wrapper` make each of those behave (see `prepare_process` and
`run_for_sweeper`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, read_write

from lmtrain.errors import LMTrainError
from lmtrain.utils.wandb_run import job_name

log = logging.getLogger(__name__)
T = TypeVar("T")


class RankAgreedError(LMTrainError):
    """A stop that every rank decided together (through a collective) and raises at the same
    step, such as a non-finite loss: rank 0 alone prints it, and the ranks leave together."""


class Preempted(SIGTERMException):
    """Training stopped on a preemption signal, with a checkpoint saved, on every rank at once.

    A SIGTERMException (so a sweep job re-raises it instead of scoring it) whose exit code is
    128 + the signal's number, what a shell reports for a process the signal ended: 143 for
    SIGTERM, 138 for SIGUSR1.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(128 + signum)
        self.message = message


def task_wrapper(task: Callable[..., T]) -> Callable[..., T]:
    """Run `task`; on an LMTrainError print `error: <message>` and exit 1; always finish W&B."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        exit_code = 1
        agreed = False  # every rank stops here together: they leave together too
        try:
            result = task(*args, **kwargs)
            exit_code = 0
            return result
        except Preempted as preempted:
            exit_code, agreed = preempted.code, True
            print_on_rank_zero(f"error: {preempted.message}")
            raise
        except SIGTERMException as stopped:
            # Lightning's own SIGTERM handler, outside the training steps (setup, the final
            # validation): its bare SIGTERMException would exit 0, as if the run had finished.
            exit_code = stopped.code if isinstance(stopped.code, int) else 128 + signal.SIGTERM
            print_on_rank_zero(
                "error: terminated by SIGTERM outside the training steps: nothing was saved "
                "after the last checkpoint; resume with ckpt_path=last hydra.run.dir=<run folder>"
            )
            raise SIGTERMException(exit_code) from None
        except Exception as err:
            user_error = find_user_error(err)
            if user_error is None:
                raise
            agreed = isinstance(user_error, RankAgreedError)
            if agreed:
                print_on_rank_zero(f"error: {user_error}")
            else:
                print(f"error: {user_error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            finish_wandb(exit_code)
            if agreed:
                leave_together()

    return wrapped


def print_on_rank_zero(line: str) -> None:
    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr, flush=True)


def leave_together() -> None:
    """Wait for every rank before exiting after a stop they agreed on.

    Rank 0 finishes the W&B run first; a rank > 0 that exited before that would make Lightning's
    launcher, which watches the ranks it started, kill rank 0 mid-way.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def last_checkpoint_path(trainer: Any) -> Path:
    """`<trainer.default_root_dir>/checkpoints/last.ckpt`: the run folder's file that
    `ckpt_path=last` resumes from (the trainer config sets default_root_dir to the run folder)."""
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


def resume_hint(path: Path) -> str:
    """How to resume from `path`, a run folder's checkpoints/last.ckpt or any other file."""
    if path.name == "last.ckpt" and path.parent.name == "checkpoints":
        return f"resume with ckpt_path=last hydra.run.dir={path.parent.parent}"
    return f"resume with ckpt_path={path}"


def find_user_error(err: BaseException | None) -> LMTrainError | None:
    """The LMTrainError behind `err`, also when Hydra's instantiate wrapped it in its own."""
    while err is not None:
        if isinstance(err, LMTrainError):
            return err
        err = err.__cause__ or err.__context__
    return None


def finish_wandb(exit_code: int) -> None:
    """Close the W&B run if one is open (a no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(data, tmp, indent=2, sort_keys=True)
        tmp.write("\n")
    os.replace(tmp.name, path)


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Tensors and numbers from Lightning's metric dicts as plain floats."""
    return {k: float(v) for k, v in metrics.items()}


def fail(message: str) -> NoReturn:
    """End the process the way task_wrapper ends a user error: one line, exit code 1."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# -- processes: DDP ranks, torchrun, SLURM requeues ---------------------------------------------
def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_process(cfg: DictConfig) -> None:
    """What a training process does before its task, whoever started it.

    - Ranks > 0 (started by Lightning, torchrun or SLURM) log to the console only: the run
      folder's log file, like every file there, is rank 0's.
    - torchrun starts every rank as its own Hydra run, and each would make its own run folder;
      require one folder named on the command line instead.
    - A requeued SLURM job (preempted or out of time) resumes from its run folder's last.ckpt.
    """
    if rank_zero_only.rank > 0:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
            root.removeHandler(handler)
            handler.close()
    hydra_cfg = HydraConfig.get()
    started_by_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
    if started_by_torchrun and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        named = any(str(o).startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra)
        if hydra_cfg.mode != RunMode.MULTIRUN and not named:
            fail(
                "torchrun starts each rank as its own Hydra run, each with its own run folder: "
                "pass hydra.run.dir=<folder> (the same for every rank and node)"
            )
    resume_after_requeue(cfg)


def resume_after_requeue(cfg: DictConfig) -> None:
    """A requeued SLURM job runs again in the same run folder: set `ckpt_path=last` if it has one.

    SLURM counts restarts in SLURM_RESTART_COUNT. Lightning's own auto-requeue checkpoint
    (`hpc_ckpt_*.ckpt`, saved when SLURM signals it) is newer and Lightning resumes from it by
    itself when ckpt_path is null, so it is left to do so.
    """
    if cfg.get("ckpt_path") or int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) < 1:
        return
    run_dir = Path(cfg.paths.output_dir)
    if any(run_dir.glob("hpc_ckpt_*.ckpt")) or not (run_dir / "checkpoints" / "last.ckpt").exists():
        return
    log.info("Requeued SLURM job: resuming from %s", run_dir / "checkpoints" / "last.ckpt")
    cfg.ckpt_path = "last"


@contextlib.contextmanager
def ddp_ranks_rerun_this_job() -> Iterator[None]:
    """Make Lightning's DDP launcher start ranks > 0 as this multirun job, not as the whole sweep.

    The launcher starts them by re-running `sys.argv` with `hydra.run.dir=<HydraConfig run.dir>`
    and `hydra.output_subdir=null`. In a multirun, argv is the sweep (`-m lr=1e-3,3e-4`) and
    run.dir is not the job's folder, so both are pointed at this job for its duration.

    Lightning also watches the ranks it starts and, when one dies, kills them all *and the main
    process*: here, the whole sweep (orphaning a rank already started for the next job). For the
    job's duration a dying rank kills only this job's ranks; rank 0 then fails on its broken
    collectives and the sweep goes on. After the job, its process group, its ranks and the
    variables the launcher exported (LOCAL_RANK, MASTER_PORT, ..., which would make the next job
    think its ranks exist already) are gone.
    """
    import torch.distributed as dist
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
    from lightning.pytorch.strategies.launchers import subprocess_script

    class JobObserver(_ChildProcessObserver):
        def _terminate_all(self) -> None:  # Lightning's also kills the main process
            for proc in self._child_processes:
                proc.send_signal(self._termination_signal)

    observers: list[JobObserver] = []

    def launch_observer(child_processes: list) -> None:
        observers.append(JobObserver(main_pid=os.getpid(), child_processes=child_processes))
        observers[-1].start()

    hydra_cfg = HydraConfig.get()
    argv, environ = sys.argv, dict(os.environ)
    launch = subprocess_script._launch_process_observer
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    subprocess_script._launch_process_observer = launch_observer
    try:
        yield
    finally:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        subprocess_script._launch_process_observer = launch
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()  # ranks still waiting on rank 0 now fail and exit
        for observer in observers:
            observer._finished = True
            for proc in observer._child_processes:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# -- sweeps --------------------------------------------------------------------------------------
def run_for_sweeper(
    task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig
) -> float | None:
    """Run `task` and return its `optimized_metric`, the value Hydra's sweepers read.

    In a multirun, one job must not end the sweep: a job that raises (its W&B run is finished as
    failed by task_wrapper) or whose metric is NaN or infinite (diverged) is logged and scores the
    worst value for the sweeper's direction, so Optuna records it and samples elsewhere.
    """
    metric = cfg.get("optimized_metric") or "val/loss"
    if not in_multirun():
        return task(cfg).get(metric)
    hydra_cfg = HydraConfig.get()
    job = f"Job {hydra_cfg.job.num} ({job_name(hydra_cfg, cfg.task_name)})"
    with ddp_ranks_rerun_this_job():
        try:
            metrics = task(cfg)
        except Exception:
            log.exception("%s failed; the sweep goes on", job)
            return worst_value()
        except SystemExit as exit_:  # task_wrapper's exit after a user error, already printed
            if isinstance(exit_, SIGTERMException):  # preempted: SLURM requeues, not a result
                raise
            log.error("%s failed (exit code %s); the sweep goes on", job, exit_.code)
            return worst_value()
    value = metrics.get(metric)
    if value is None:
        fail(
            f"optimized_metric={metric!r} is not among this run's metrics "
            f"({', '.join(sorted(metrics))}): set optimized_metric to one of them"
        )
    if not math.isfinite(value):
        log.warning("%s diverged (%s=%s); reporting %s", job, metric, value, worst_value())
        return worst_value()
    return value


def worst_value() -> float:
    """+inf for a minimizing sweeper, -inf for `hydra.sweeper.direction=maximize`.

    Not NaN: Optuna's sweeper counts a NaN as a failed trial and, with its default
    max_failure_rate of 0, ends the study.
    """
    direction = HydraConfig.get().sweeper.get("direction") if HydraConfig.initialized() else None
    return -math.inf if str(direction).lower() == "maximize" else math.inf
