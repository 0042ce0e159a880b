"""The run folder's problems that a run from Python meets too (`check_train_config`; on the
command line `ClaimRunFolder` finds the debug run first, before Hydra writes into the folder):
a debug run into a run's folder, and a typed `paths.output_dir` beside Hydra's job folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.utils.run_folder import debug_run_problem, folder_key
from lmtrain.utils.typed_overrides import typed_value


def run_folder_problems(cfg: DictConfig) -> list[str]:
    """The run folder's problems, for `check_train_config` (a run from Python has no
    ClaimRunFolder): a debug run into a run's folder, a typed paths.output_dir beside Hydra's."""
    folder = OmegaConf.select(cfg, "paths.output_dir", default=None)
    if folder is None:
        return []
    folder, fast = Path(str(folder)).resolve(), OmegaConf.select(cfg, "trainer.fast_dev_run")
    # As ClaimRunFolder: overwrite_run=true lets a debug run in, a requeued job's folder is its own.
    requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    replace = cfg.get("overwrite_run") is True or requeued
    debug = None if replace else debug_run_problem(folder, fast, folder_key(folder))
    found = [debug, split_run(folder)]
    return [problem for problem in found if problem]


def split_run(folder: Path) -> str | None:
    """Why a typed `paths.output_dir` other than Hydra's job folder is refused: checkpoints and
    metrics went to it, `.hydra/` and the log to the job folder, and `resume=` took neither."""
    if typed_value("paths.output_dir") is None or not HydraConfig.initialized():
        return None
    try:
        job = Path(str(HydraConfig.get().runtime.output_dir)).resolve()
    except OmegaConfBaseException:  # composed without a job
        return None
    if job == folder:
        return None
    if HydraConfig.get().mode == RunMode.MULTIRUN:  # hydra.sweep.dir/hydra.sweep.subdir
        return f"paths.output_dir={folder} is not this sweep job's folder {job}: drop it"
    return (
        f"paths.output_dir={folder} is not the run folder {job} (Hydra's hydra.run.dir): "
        f"pass hydra.run.dir={folder} instead"
    )
