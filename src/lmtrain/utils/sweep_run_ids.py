"""A tracker run id fixed for a whole sweep, refused: every job would log into that one run.

`-m logger.wandb.id=exp1 lr=1e-3,3e-4` gave each job the id exp1 and exited 0: the jobs' W&B
runs were one run, into which `wandb sync` would upload every job's history. Under `-m` a
configured id must differ per job, so it holds a `${...}` of what differs
(`exp1-${hydra:job.num}`); one that still came out as another job folder of the sweep holds
(a `${oc.env:...}` every job shares) is refused too, at the job that would share it. Dropping
the setting gives each job a new run, kept in its folder for resumes.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.tracker_ids import same_folder, saved_text


def refuse_shared_run_id(
    entry: DictConfig,
    key: str,
    run_id: str,
    run_dir: Path,
    id_file: str,
    service: str,
    made_per_job: bool = True,
) -> None:
    """One line, in a multirun job, when `entry[key]` (the configured `run_id` of `service`)
    would be every job's, or is the id another job folder of the sweep keeps in its `id_file`.
    Outside a multirun, nothing to refuse. `made_per_job`: whether an id of one's own making
    names a run (W&B's does; MLflow's must be one its store made, so the line only drops it)."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is None or hydra.mode != RunMode.MULTIRUN:
        return
    setting = f"logger.{entry._key()}.{key}"
    instead = f"drop it ({setting}=null: each job a new {service} run, which resuming the job "
    instead += "continues)"
    if made_per_job:
        instead += f", or make it differ per job, '{setting}={run_id}-${{hydra:job.num}}'"
    if not OmegaConf.is_interpolation(entry, key):
        raise LMTrainError(
            f"{setting}={run_id} is one {service} run id for every job of the sweep, which "
            f"would log them all into one run: {instead}"
        )
    other = job_holding(Path(str(hydra.sweep.dir)), id_file, run_id, run_dir)
    if other is not None:
        raise LMTrainError(
            f"{setting}={run_id} is also the {service} run id of {other}, another job of this "
            f"sweep: the two would log into one run: {instead}"
        )


def job_holding(sweep_dir: Path, id_file: str, run_id: str, run_dir: Path) -> Path | None:
    """A job folder under `sweep_dir`, other than `run_dir`, whose `id_file` holds `run_id`
    (job folders may be several levels down, by hydra.sweep.subdir; links are not followed)."""
    for folder, _, files in os.walk(sweep_dir):
        path = Path(folder) / id_file
        if id_file not in files or not path.is_file() or same_folder(path.parent, run_dir):
            continue
        if saved_text(path) == run_id:  # not UTF-8 text: no run id
            return Path(folder)
    return None
