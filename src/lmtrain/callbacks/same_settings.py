"""`SameSettingsOnEveryRank`: every rank trains with the same settings, or the run stops before
training with one line naming the keys that differ and the ranks that have each value.

Each torchrun node and each SLURM task is started by its own command line. A setting typed on
one node only (lmtrain.utils.rank_settings has the cases) hung, skewed or crashed the run, and
nothing said why. Once the process group exists, at `setup` (before the model is wrapped by DDP
and before any step, and before SameDataOnEveryRank compares the token caches), every rank
gathers every rank's settings, and all of them stop together when any differ: rank 0 prints
the line. A single process makes no collective.
"""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig

from lmtrain.errors import RankAgreedError
from lmtrain.utils.rank_settings import rank_settings, settings_differ


class SameSettingsOnEveryRank(Callback):
    def __init__(self, cfg: DictConfig) -> None:
        self.settings = rank_settings(cfg)  # read now: the config as the run was given it
        self.checked = False  # setup runs again for the final validation: compared once

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.checked or trainer.world_size == 1 or not dist.is_initialized():
            return
        self.checked = True
        gathered: list[dict[str, str]] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, self.settings)
        if (line := settings_differ(gathered)) is not None:
            raise RankAgreedError(line)
