"""`SameDataOnEveryRank`: every rank trains on the same tokens, and a resumed run on the tokens
of the run it continues, or the run stops before training.

Each node prepares the token cache it reads (`data.cache_dir` may be node-local). Two nodes
whose corpus copies or tokenizer differ would each train on their own data, and nothing would
say so: the loss would just be worse. Once the process group exists, the ranks compare one
digest of what their cache serves (the tokenizer and the token files' checksums, read from the
cache's meta.json: no token file is read) and stop together, with one line, when any differs.

The same digest goes into every checkpoint (this callback's state). `resume=` keeps
`data.source` as typed, but a relative `data.source.path` means the launch directory: resumed
from another one (or after the corpus was edited in place) it found another corpus, built
another cache and trained on it, with val/loss on another split. A run's own checkpoint
(`resume=`, `ckpt_path=last`: `resumes_run_in`) whose recorded digest differs is refused when
it is restored, before anything is written; a checkpoint taken into a new run folder
(`ckpt_path=<file>`) may train on other data, and an older checkpoint without the record
resumes as before.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer

from lmtrain.data.checksums import data_digest
from lmtrain.data.token_cache import load_meta
from lmtrain.errors import RankAgreedError
from lmtrain.utils.outside_checkpoints import resumes_run_in


class SameDataOnEveryRank(Callback):
    def __init__(self) -> None:
        self.digest: str | None = None  # what this process's cache serves
        self.cache: str | None = None  # that cache's folder
        self.source: Any = None  # data.source.path (or the whole data.source) as configured
        self.output_dir: str | None = None  # this run's folder (paths.output_dir)
        self.trainer: Trainer | None = None  # its ckpt_path is known once restoring starts

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        folder = getattr(datamodule, "cache_path", None) if datamodule is not None else None
        if folder is None:
            return
        if self.digest is None:  # setup runs again for the final validation
            self.digest = data_digest(folder, load_meta(folder))
            self.cache = str(Path(folder).resolve())
            run_config = getattr(pl_module, "run_config", None) or {}
            source = (run_config.get("data") or {}).get("source")
            self.source = source.get("path", source) if isinstance(source, dict) else source
            self.output_dir = (run_config.get("paths") or {}).get("output_dir")
        self.trainer = trainer
        if trainer.world_size == 1 or not dist.is_initialized():
            return
        digests: list[str | None] = [None] * dist.get_world_size()
        dist.all_gather_object(digests, self.digest)
        odd = [rank for rank, digest in enumerate(digests) if digest != digests[0]]
        if odd:
            raise RankAgreedError(
                f"the token cache differs between ranks: ranks {odd} serve other tokens or another "
                f"tokenizer than rank 0 (rank {trainer.global_rank}: {folder}): give every node "
                "the same corpus and tokenizer settings, or build the cache once on shared "
                "storage (data.cache_dir=<a folder every node reads>)"
            )

    def state_dict(self) -> dict[str, Any]:
        if self.digest is None:
            return {}
        return {"data_digest": self.digest, "cache": self.cache, "cwd": os.getcwd()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Refuse to go on with the run's own checkpoint on other tokens. Every rank serves the
        same digest (checked at setup) and reads the same checkpoint: they stop together."""
        recorded = state_dict.get("data_digest")
        if self.digest is None or not isinstance(recorded, str) or recorded == self.digest:
            return
        ckpt_path = self.trainer.ckpt_path if self.trainer is not None else None
        if not self.output_dir or not resumes_run_in(self.output_dir, ckpt_path):
            return  # a checkpoint taken into a new run folder may train on other data
        cwd, here = state_dict.get("cwd"), os.getcwd()
        if isinstance(cwd, str) and cwd != here:
            advice = (
                f"the run was launched from {cwd} and this command from {here}: resume from "
                f"{cwd}, where a relative data.source.path finds the run's corpus"
            )
        else:
            advice = (
                "the corpus or the tokenizer changed since the checkpoint was saved: restore "
                "them, or start a new run folder from the checkpoint (ckpt_path=<file>)"
            )
        raise RankAgreedError(
            f"this run's checkpoint was trained on other data than data.source.path="
            f"{self.source!r} gives here (token cache {self.cache}, the run's: "
            f"{state_dict.get('cache')}): {advice}"
        )
