"""A training run under SLURM needs a run folder that every task and every attempt names again.

The default run folder (configs/hydra/default.yaml) is named by the time the process starts
(`${now:...}`). A submitit job (`hydra/launcher=slurm`) is a multirun whose folder is fixed at
submission, but a command in an sbatch script of one's own is a plain Hydra run in every srun
task and in every attempt: each task made a folder of its own (the second a stray `.hydra/` and
log), and the attempt SLURM requeues (Lightning's auto-requeue, a preemption, a node failure)
found its new folder empty and trained again from step 0, exit 0, leaving the earlier attempt's
checkpoints behind (red team). SLURM keeps the job id across requeues: a folder named by it is
the one the requeued attempt resumes in (`lmtrain.utils.requeue.resume_after_requeue`).

The check applies where Lightning runs the processes as a SLURM job (`SLURMEnvironment.detect`:
SLURM_NTASKS set and a job name other than `bash` or `interactive`; torchrun's ranks are
Lightning's first) and only to the config Hydra is about to run (its `hydra` node, seen by the
ClaimRunFolder callback before Hydra makes the folder): a config composed in Python makes no
folder of Hydra's.
"""

from __future__ import annotations

import os

from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from omegaconf import DictConfig, OmegaConf

from lmtrain.utils.time_named_folder import suggested_folder, time_named_folder_problem


def slurm_run_folder_problem(cfg: DictConfig) -> str | None:
    """Why this SLURM task's run folder would not be the job's one folder, in one line, or None:
    a plain Hydra run (not a multirun) under SLURM whose `hydra.run.dir` is named by the time
    and not by SLURM_JOB_ID (`lmtrain.utils.time_named_folder`, which torchrun's and Lightning's
    several-node launches are checked with too)."""
    hydra = cfg.get("hydra") if isinstance(cfg, DictConfig) else None
    if not isinstance(hydra, DictConfig) or hydra.get("mode") == RunMode.MULTIRUN:
        return None  # no folder of Hydra's, or a sweep's job (submitit's: fixed at submission)
    if TorchElasticEnvironment.detect() or not SLURMEnvironment.detect():
        return None
    raw = str(OmegaConf.to_container(hydra.run, resolve=False).get("dir"))  # type: ignore[union-attr]
    job = os.environ.get("SLURM_JOB_ID", "<unset>")
    return time_named_folder_problem(
        raw,
        f"a SLURM job (SLURM_JOB_ID={job})",
        "every srun task, and every attempt SLURM requeues, would make a new folder (a requeued "
        f"attempt would train again from step 0): pass hydra.run.dir={suggested_folder(cfg)}/"
        "$SLURM_JOB_ID in the sbatch script (the job id stays the same when the job is "
        "requeued), or submit with -m hydra/launcher=slurm",
    )
