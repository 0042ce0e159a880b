"""What `hydra/launcher=slurm` (hydra-submitit-launcher) cannot do, refused before any job.

- It launches the jobs of a multirun only: without `-m`, Hydra leaves the launcher unused, and
  the run trained on the login node (exit code 0), where the user asked for SLURM.
- It needs `srun`: on a machine without SLURM, submitit's traceback came after the sweep began.
- It resolves `hydra.launcher` once, with the sweep's own config, and submits every job with
  those sbatch options: `tasks_per_node: ${trainer.devices}` looks per job but is not, so a
  sweep over `trainer.devices=2,4` ran its 4-device job with 2 tasks (red team rev_sweep).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

from hydra.types import RunMode
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError

# What sizes a job's sbatch options (configs/hydra/launcher/slurm.yaml): devices and nodes, and
# the trainer group that sets them. (A sweep over experiments that set them is not seen.)
SIZING_KEYS = ("trainer", "trainer.devices", "trainer.num_nodes")


def launcher_without_multirun(hydra_overrides: Sequence[str], mode: RunMode | None) -> str | None:
    """What is wrong with a run (not `-m`) given a launcher on the command line (Hydra's own
    overrides, `hydra_overrides`), or None. Only a typed launcher: the ranks that Lightning's
    launcher starts for a multirun job rerun the job's own overrides, without Hydra's."""
    if mode == RunMode.MULTIRUN:
        return None
    for override in map(str, hydra_overrides):
        key, _, name = override.partition("=")
        if key.lstrip("+~") == "hydra/launcher" and name not in ("", "basic", "null"):
            return (
                f"hydra/launcher={name} launches the jobs of a multirun: add -m (or drop "
                "hydra/launcher to run here)"
            )
    return None


def refuse_slurm_launcher_problems(config: DictConfig, swept: list[str]) -> None:
    """`swept`: the keys (or groups) the sweep varies."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    if not launcher.endswith(".SlurmLauncher"):
        return
    if shutil.which("srun") is None:
        raise LMTrainError(
            "hydra/launcher=slurm submits jobs with SLURM, and this machine has no srun (not a "
            "SLURM cluster): run the command on a SLURM login node, or use "
            "hydra/launcher=slurm_local to run the jobs here"
        )
    sizing = [key for key in swept if key in SIZING_KEYS]
    if sizing:
        raise LMTrainError(
            f"hydra/launcher=slurm submits every job of a sweep with the sbatch options of the "
            f"sweep's own config, so a sweep over {', '.join(sizing)} would run each job with "
            "the same --ntasks-per-node and --nodes: start one sweep per size instead (e.g. "
            "trainer.devices=4 -m <the other keys>)"
        )
