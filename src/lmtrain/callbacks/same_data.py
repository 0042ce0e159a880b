"""`SameDataOnEveryRank`: every rank trains on the same tokens, or the run stops at setup.

Each node prepares the token cache it reads (`data.cache_dir` may be node-local). Two nodes
whose corpus copies or tokenizer differ would each train on their own data, and nothing would
say so: the loss would just be worse. Once the process group exists, the ranks compare one
digest of what their cache serves (the tokenizer and the token files' checksums) and stop
together, with one line, when any differs.
"""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.data.checksums import data_digest
from lmtrain.data.token_cache import load_meta
from lmtrain.errors import RankAgreedError


class SameDataOnEveryRank(Callback):
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if trainer.world_size == 1 or not dist.is_initialized() or datamodule is None:
            return
        folder = datamodule.cache_path
        digests: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(digests, data_digest(folder, load_meta(folder)))
        odd = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
        if odd:
            raise RankAgreedError(
                f"the token cache differs between ranks: ranks {odd} serve other tokens or another "
                f"tokenizer than rank 0 (rank {trainer.global_rank}: {folder}): give every node "
                "the same corpus and tokenizer settings, or build the cache once on shared "
                "storage (data.cache_dir=<a folder every node reads>)"
            )
