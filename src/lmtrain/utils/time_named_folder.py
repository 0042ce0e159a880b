"""A run folder named by the time each process starts, where several processes make one run.

The default run folder (configs/hydra/default.yaml) is named by Hydra's clock (`${now:...}`),
resolved in every process on its own. Where a launcher starts each process of one run as its own
Hydra run (srun's tasks, torchrun's ranks, Lightning's launcher on each node), such a name gives
each process, and each requeued attempt, a folder of its own: under torchrun, rank 1's folder
held only `.hydra/` and an empty log while rank 0 trained in another, and `ckpt_path=last` on the
next attempt looked in yet another (red team). One check for every such launcher, each naming
itself and what to pass instead (`lmtrain.utils.slurm_run_folder`, `lmtrain.utils.launch`).
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

# What makes a folder name differ from one process to the next: Hydra's clock resolver.
PER_PROCESS = "${now:"
# A name that is the same in every process of a SLURM job, and in each attempt it is requeued.
JOB_ID = "SLURM_JOB_ID"


def time_named_folder_problem(raw: str, launcher: str, todo: str) -> str | None:
    """Why `hydra.run.dir` as written (`raw`, unresolved) would be one folder per process under
    `launcher` (e.g. "torchrun (WORLD_SIZE=2)"), in one line ending with `todo`, or None.

    A `${now:...}` that is only the fallback of a set SLURM job id (a local config's
    `${oc.env:SLURM_JOB_ID,${now:...}}`) names the same folder in every process."""
    if PER_PROCESS not in raw or (JOB_ID in raw and JOB_ID in os.environ):
        return None
    return (
        f"{launcher} with hydra.run.dir={raw}, a folder named by the time each process starts: "
        f"{todo}"
    )


def suggested_folder(cfg: DictConfig) -> str:
    """Where the default run folders of this task go (`<paths.log_dir>/<task_name>/runs`)."""
    log_dir = OmegaConf.select(cfg, "paths.log_dir", throw_on_resolution_failure=False)
    task = OmegaConf.select(cfg, "task_name", throw_on_resolution_failure=False)
    return f"{log_dir or '<paths.log_dir>'}/{task or '<task_name>'}/runs"
