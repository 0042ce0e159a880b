"""How a training process is launched, and how a sweep scores its jobs.

Training runs as a plain process, as one of several DDP ranks (started by Lightning, torchrun or
SLURM), as a Hydra multirun job and as a SLURM job that may be requeued. `prepare_process` makes
each of those behave before the task starts; `run_for_sweeper` turns a job's result (or failure)
into the value Hydra's sweepers read (`lmtrain.utils.sweep_outcome` gives the whole sweep its
exit status).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from lightning_utilities.core.rank_zero import rank_zero_only as utilities_rank_zero_only
from omegaconf import DictConfig, ListConfig, read_write

from lmtrain.errors import LMTrainError, NonFiniteLossError, Preempted, find_cause, first_line
from lmtrain.lightning_compat import ddp_launcher_observes
from lmtrain.utils import requeue
from lmtrain.utils.composed_config import run_folder, typed_null_run_folder
from lmtrain.utils.entry_module import entry_module_of, main_module_as
from lmtrain.utils.launch_env import CLUSTERS_THAT_START_NODES, launch_problem
from lmtrain.utils.parent_death import end_with_parent
from lmtrain.utils.rank_logging import log_errors_only
from lmtrain.utils.requeue import hold_submitit_requeue, requeue_after_stop, resume_after_requeue
from lmtrain.utils.resume_hints import resume_after_stop
from lmtrain.utils.slurm_launcher_checks import launcher_without_multirun
from lmtrain.utils.sweep_jobs import STOPPED_DIVERGED, sweep_direction
from lmtrain.utils.sweep_ledger import record_job
from lmtrain.utils.sweep_plan import end_sweep_on_interrupt, end_sweep_on_preemption
from lmtrain.utils.task import INTERRUPTED_EXIT_CODE, fail, restore_environment
from lmtrain.utils.time_named_folder import suggested_folder, time_named_folder_problem
from lmtrain.utils.wandb_run import job_name

log = logging.getLogger(__name__)
# Variables by which a launcher tells each process its node or global rank (Lightning's own
# launcher: NODE_RANK or GROUP_RANK; SLURM, Kubeflow and others: RANK or SLURM_PROCID), or a
# hand-started node 0 its rendezvous (MASTER_ADDR: Lightning takes a missing NODE_RANK as 0).
RANK_VARIABLES = ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_PROCID", "MASTER_ADDR")
RUN_DIR = "hydra.run.dir="  # the override that names the run folder


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def prepare_process(cfg: DictConfig) -> None:
    """What a training process does before its task, whoever started it.

    - Ranks > 0 (started by Lightning, torchrun or SLURM) log errors only, to the console: rank
      0 says the rest, and the run folder's log file, like every file there, is rank 0's.
    - torchrun starts every rank as its own Hydra run, and each would make its own run folder;
      require one folder named on the command line instead.
    - A SLURM (submitit) job holds back submitit's requeue until every rank has saved
      (`lmtrain.utils.requeue`); a requeued job resumes from its run folder's newest save.
    """
    orphaned = end_with_parent()  # a rank Lightning started ends with rank 0 from now on
    if orphaned:
        fail(orphaned)
    refuse_nodes_no_one_starts(cfg)  # and the launcher's variables, before they are read
    set_rank_from_node(cfg)
    if rank_zero_only.rank > 0:
        log_errors_only()
    hydra_cfg = HydraConfig.get()
    refuse_run_folder_per_process(cfg, hydra_cfg.overrides.hydra, hydra_cfg.mode)
    refuse_torchrun_world_mismatch(cfg)
    try:  # paths.output_dir resolving to null was a TypeError, after the folder was made
        run_dir = run_folder(cfg)
    except LMTrainError as err:
        fail(str(err))
    hold_submitit_requeue(run_dir)
    resume_after_requeue(cfg)


def refuse_run_folder_per_process(
    cfg: DictConfig, hydra_overrides: Sequence[str], mode: RunMode | None
) -> None:
    """torchrun, and Lightning's launcher across nodes, start each process as its own Hydra
    run, each of which would make its own run folder: require one named on the command line
    (`hydra_overrides`: Hydra's own), and not by the time each process starts (`${now:...}`,
    as SLURM's tasks are checked: `lmtrain.utils.time_named_folder`). Also called by
    ClaimRunFolder before Hydra makes one, so a launcher given without `-m`, which would run
    here, is refused here too, as is `paths.output_dir=null`, which left the folder behind and
    was a TypeError."""
    if (problem := launcher_without_multirun(hydra_overrides, mode)) is not None:
        fail(problem)
    if (problem := typed_null_run_folder(cfg)) is not None:
        fail(problem)
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if mode == RunMode.MULTIRUN or not (torchrun or launched_across_nodes(cfg)):
        return
    if torchrun:
        launcher, each = f"torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']})", "rank"
        folder = f"{suggested_folder(cfg)}/<run name> (the same for every rank and node)"
        unnamed = "torchrun starts each rank as its own Hydra run, each with its own run folder"
        unnamed += ": pass hydra.run.dir=<folder> (the same for every rank and node)"
    else:
        nodes = f"NODE_RANK set, trainer.num_nodes={cfg.trainer.num_nodes}"
        launcher, each = f"Lightning's launcher on several nodes ({nodes})", "node"
        folder = "<a folder on storage every node shares> (the same on every node)"
        unnamed = f"{launcher} starts each node as its own Hydra run: pass hydra.run.dir={folder}"
    typed = [str(o).split("=", 1)[1] for o in hydra_overrides if str(o).startswith(RUN_DIR)]
    if not typed:
        fail(unnamed)
    todo = f"each {each} would make its own folder: pass hydra.run.dir={folder}"
    if (problem := time_named_folder_problem(typed[-1], launcher, todo)) is not None:
        fail(problem)  # the last one typed is the one Hydra takes


def refuse_torchrun_world_mismatch(cfg: DictConfig) -> None:
    """torchrun's processes must be the trainer's: with trainer=cpu (one device) under
    `--nproc_per_node=2` each trained the whole run alone, into one folder (exit code 0)."""
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes") or 1
    devices = len(devices) if isinstance(devices, list | ListConfig) else devices  # indices
    if "TORCHELASTIC_RUN_ID" not in os.environ or not isinstance(devices, int) or devices < 1:
        return  # not torchrun, or devices="auto" (Lightning counts torchrun's processes)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if isinstance(nodes, int) and world != devices * nodes:
        fail(
            f"torchrun started {world} processes (WORLD_SIZE) but trainer.devices={devices} x "
            f"trainer.num_nodes={nodes} is {devices * nodes}: pass trainer.devices=<its "
            "--nproc_per_node> and trainer.num_nodes=<its --nnodes>, with a trainer of several "
            "processes (trainer=ddp, fsdp, ddp_cpu or fsdp_cpu)"
        )


def launched_across_nodes(cfg: DictConfig) -> bool:
    """Lightning's own launcher on several nodes: NODE_RANK set by the user, no torchrun, no
    SLURM (those set every rank themselves)."""
    trainer = cfg.get("trainer") or {}
    return (
        "NODE_RANK" in os.environ
        and int(trainer.get("num_nodes") or 1) > 1
        and "TORCHELASTIC_RUN_ID" not in os.environ
        and "SLURM_PROCID" not in os.environ
    )


def refuse_nodes_no_one_starts(cfg: DictConfig) -> None:
    """Fail when `trainer.num_nodes` > 1 but nothing starts the other nodes' processes, or on
    a launcher's variable that Lightning would trip over (`lmtrain.utils.launch_env`).

    Lightning's launcher starts this node's processes only; without NODE_RANK or MASTER_ADDR
    (the user runs the command on every node), torchrun, SLURM or another cluster Lightning
    knows, the ranks wait at the rendezvous for nodes that never come, for torch's timeout.
    """
    if (problem := launch_problem(cfg)) is not None:
        fail(problem)
    trainer = cfg.get("trainer") or {}
    num_nodes = trainer.get("num_nodes")
    if not isinstance(num_nodes, int) or num_nodes <= 1:
        return
    if any(name in os.environ for name in RANK_VARIABLES):
        return
    if any(env.detect() for env in CLUSTERS_THAT_START_NODES):
        return
    fail(
        f"trainer.num_nodes={num_nodes} but nothing starts the other nodes (no torchrun, SLURM, "
        "NODE_RANK or MASTER_ADDR here), so this one would wait for them forever: run the "
        f"command on every node with torchrun --nnodes={num_nodes} or NODE_RANK=<n> "
        "MASTER_ADDR=<node 0>, or through SLURM (hydra/launcher=slurm), see docs/scaling.md; or "
        "set trainer.num_nodes=1"
    )


def set_rank_from_node(cfg: DictConfig) -> None:
    """Under Lightning's launcher across nodes, tell this process its global rank before Lightning
    does (NODE_RANK x devices + LOCAL_RANK): until then a node's first process would take itself
    for rank 0 and write rank 0's files (the W&B run id, the run folder's lock)."""
    if not launched_across_nodes(cfg) or rank_zero_only.rank > 0:
        return
    devices = cfg.trainer.get("devices")
    per_node = devices if isinstance(devices, int) and devices > 0 else 1
    rank = int(os.environ["NODE_RANK"]) * per_node + int(os.environ.get("LOCAL_RANK", 0))
    rank_zero_only.rank = utilities_rank_zero_only.rank = rank


@contextlib.contextmanager
def ddp_ranks_rerun_this_job(entry_module: str | None) -> Iterator[None]:
    """Make Lightning's DDP launcher start ranks > 0 as this multirun job, not as the whole sweep.

    The launcher starts them by re-running `sys.argv` with `hydra.run.dir=<HydraConfig run.dir>`
    and `hydra.output_subdir=null`. In a multirun, argv is the sweep (`-m lr=1e-3,3e-4`) and
    run.dir is not the job's folder, so both are pointed at this job for its duration; a dying
    rank ends only this job (`lightning_compat.ddp_launcher_observes`). After the job,
    its process group, its ranks and the variables the launcher exported (LOCAL_RANK,
    MASTER_PORT, ..., which would make the next job think its ranks exist already) are gone.

    The launcher re-runs `python -m <__main__'s module>` (or `python <argv[0]>`): under a
    submitit launcher that is submitit's job runner, not `entry_module` (`lmtrain.train`), so
    the ranks are pointed at `entry_module` (`main_module_as`; None: leave `__main__` be).
    """
    hydra_cfg = HydraConfig.get()
    argv, environ = sys.argv, dict(os.environ)
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    with main_module_as(entry_module), ddp_launcher_observes(True, end_interrupted_sweep):
        sys.argv = [sys.argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
        try:
            yield  # then the process group is left, and the ranks waited for
        finally:
            sys.argv = argv
            restore_environment(environ)


def end_interrupted_sweep() -> None:
    """A rank of this sweep's job ended on a Ctrl-C that this process could not act on (held
    at the ranks' rendezvous): record the sweep's end as a Ctrl-C between its jobs does."""
    from lmtrain.utils import sweep_sigterm

    sweep_sigterm.end_terminated_sweep(KeyboardInterrupt())


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
        # Ranks > 0 end, and say why, before rank 0 exits (which kills them: see
        # lmtrain.utils.parent_death); a dying rank still ends the run, as Lightning has it.
        with ddp_launcher_observes(job_only=False):
            return task(cfg).get(metric)
    hydra_cfg = HydraConfig.get()
    job = f"Job {hydra_cfg.job.num} ({job_name(hydra_cfg, cfg.task_name)})"

    def ended(ok: bool, why: str = "") -> None:  # the sweep's ledger, read by SweepOutcome
        if rank_zero_only.rank == 0:
            sweep_dir, output_dir = Path(hydra_cfg.sweep.dir), Path(hydra_cfg.runtime.output_dir)
            record_job(sweep_dir, hydra_cfg.job.num, output_dir, ok, why)

    with ddp_ranks_rerun_this_job(entry_module_of(task)):
        started = time.time()  # a last.ckpt saved since is this job's (resume_after_stop)
        try:
            metrics = task(cfg)
        except Exception as err:
            log.exception("%s failed; the sweep goes on", job)
            ended(False, f"{type(err).__name__}: {first_line(err)}")
            return worst_value()
        except SystemExit as exit_:  # task_wrapper's exit after a user error, already printed
            if isinstance(exit_, Preempted):
                why = requeue_after_stop(exit_.signum, Path(cfg.paths.output_dir))
                if why is None:  # requeued, or not a submitit job: this process and sweep end
                    if not requeue.submitit_requeues() and rank_zero_only.rank == 0:
                        sweep, out = Path(hydra_cfg.sweep.dir), Path(hydra_cfg.runtime.output_dir)
                        try:  # the preemption's own exit (saved, resumable) must not be lost
                            end_sweep_on_preemption(
                                sweep, hydra_cfg.job.num, out, exit_.message, entry_module_of(task)
                            )
                        except Exception:
                            log.exception("%s: the record of the jobs left failed", job)
                    raise
                log.error("%s stopped and not requeued (%s); the sweep goes on", job, why)
                ended(False, f"stopped and not requeued ({why})")
                return worst_value()
            if isinstance(exit_, SIGTERMException) or requeue.requeue_in_flight:
                raise  # requeued by submitit outside the training steps
            if exit_.code == INTERRUPTED_EXIT_CODE:  # Ctrl-C (task_wrapper said `interrupted`)
                # The user stops the sweep, not this job: scoring it would start the next job
                # and store the trial as a result (Optuna keeps it RUNNING, as when preempted).
                # As after a preemption, the report names how to resume it and what did not run.
                if rank_zero_only.rank == 0:
                    try:
                        end_sweep_on_interrupt(hydra_cfg, resume_after_stop(cfg, started), task)
                    except Exception:
                        log.exception("%s: the record of the jobs left failed", job)
                raise
            if find_cause(exit_.__context__, NonFiniteLossError) is not None:
                # nan_guard=stop ended a diverged job: a result of the search, not a failure
                log.warning("%s diverged; reporting %s", job, worst_value())
                ended(True, STOPPED_DIVERGED)  # no metrics.json: the report shows it diverged
                return worst_value()
            log.error("%s failed (exit code %s); the sweep goes on", job, exit_.code)
            ended(False, getattr(exit_, "message", f"exit code {exit_.code}"))
            return worst_value()
    value = metrics.get(metric)
    if value is None:
        ended(False, f"optimized_metric={metric!r} is not among its metrics")
        fail(
            f"optimized_metric={metric!r} is not among this run's metrics "
            f"({', '.join(sorted(metrics))}): set optimized_metric to one of them"
        )
    ended(True)
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
    return -math.inf if sweep_direction(direction) == "maximize" else math.inf
