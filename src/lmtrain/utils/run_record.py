"""A run folder's `.hydra/` record, written by lmtrain rather than by Hydra.

A command run in a folder that already holds a run's record (`resume=`, `ckpt_path=last
hydra.run.dir=<run>`) writes its `.hydra/` files once training starts
(`lmtrain.callbacks.resume_run`), not when Hydra would, at job start: a command refused before
then must leave the record that `resume=<run>` reads as it was. These are the files as Hydra
would have written them, written atomically, with the ones they replace kept.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, read_write

from lmtrain.errors import LMTrainError
from lmtrain.utils.io import atomic_write


def record_files(config: DictConfig, record: str) -> dict[str, str]:
    """The resumed run's `.hydra/` files as Hydra would write them (the job's config, with
    `hydra.output_subdir` as Hydra would have it had it written them)."""
    hydra_cfg = HydraConfig.instance().cfg
    with read_write(hydra_cfg.hydra):
        hydra_cfg.hydra.output_subdir = record
    task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    return {
        "config.yaml": OmegaConf.to_yaml(task_cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(config.hydra.overrides.task),
    }


def write_record(folder: Path, files: dict[str, str]) -> None:
    """Write `files` into the run's `.hydra/` folder, atomically; keep the ones they replace in
    `.hydra/previous/<time>/`."""
    try:
        previous = folder / "previous" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
        for name in files:
            if (folder / name).is_file():
                previous.mkdir(parents=True, exist_ok=True)
                shutil.copy2(folder / name, previous / name)
        for name, content in files.items():
            with atomic_write(folder / name) as f:
                f.write(content)
    except OSError as err:
        raise LMTrainError(
            f"the resumed run's config cannot be written to {folder} ({err.strerror}): make the "
            "run folder writable"
        ) from None
