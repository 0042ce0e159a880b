"""`TextDataModule`: a corpus source and a tokenizer in, windows of tokens out.

The story in the order Lightning runs it: `prepare_data()` builds (or finds) the token cache,
`setup()` memory-maps its `train.bin` / `val.bin`, and the dataloaders slice windows of
`block_size + 1` tokens from them; the model takes `x = item[:-1]` and `y = item[1:]`.
Train windows start anywhere and are drawn with replacement, as nanoGPT does, from one stream
whose draws depend only on (seed, windows trained so far), each rank reading its share, so a
resumed run reads the windows an uninterrupted one would, on any number of ranks
(`lmtrain.data.sampler`); val windows tile the split in order, so every val loss is measured on
the same tokens.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning import LightningDataModule
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerFast

from lmtrain.data import token_cache
from lmtrain.data.corpus import Source
from lmtrain.data.sampler import ResumableDataLoader, ResumableWindowSampler
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.tokenizers import TokenizerSettings, check_tokenizer_config
from lmtrain.data.train_epochs import data_parallel_rank, epoch_micro_batches, trained_windows
from lmtrain.data.windows import FixedWindows, PaddedSampler, PaddedWindows, RandomWindows
from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems
from lmtrain.utils.composed_config import job_folder

BASE_DATA_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "data" / "_base.yaml"


def python_shorthands(source: Any, tokenizer: Any) -> tuple[Source, Any]:
    """From Python: a path (or a list of them) for `TextFilesSource(path=...)`, and a tokenizer
    kind alone (`"char"`) for `{"kind": "char"}`. Anything else that is not a source is refused
    here: it failed later on a missing method, in words that named none of this."""
    if isinstance(source, str | os.PathLike) or (
        isinstance(source, list | tuple) and all(isinstance(p, str | os.PathLike) for p in source)
    ):
        source = TextFilesSource(path=source)
    if not isinstance(source, Source):
        raise LMTrainError(
            f"source={source!r:.80} is not a corpus source: pass a path, or a source such as "
            "lmtrain.data.sources.TextFilesSource(path=...) or "
            "lmtrain.data.hf_dataset.HFDatasetSource(...)"
        )
    if not isinstance(tokenizer, str | Mapping):
        raise LMTrainError(
            f'tokenizer={tokenizer!r:.60} is not a tokenizer setting: pass a kind ("char", '
            '"bpe") or a mapping such as {"kind": "pretrained", "name": <folder or hub id>}'
        )
    return source, kind_settings(tokenizer) if isinstance(tokenizer, str) else tokenizer


def kind_settings(kind: str) -> dict[str, Any]:
    """`data.tokenizer` of configs/data/_base.yaml with `kind`, as `data.tokenizer.kind=<kind>`
    gives on the command line: a bare "bpe" had no vocab_size ("None is not a whole number")."""
    base = yaml.safe_load(BASE_DATA_CONFIG.read_text(encoding="utf-8"))
    return {**base["tokenizer"], "kind": kind}


class TextDataModule(LightningDataModule):
    """Token windows from a cached, tokenized corpus.

    `source` is an instantiated source (see `lmtrain.data.sources` and `lmtrain.data.hf_dataset`)
    or a path;
    `tokenizer` holds `kind` ("char", "bpe" or "pretrained"), `vocab_size` and `train_sample_mb`
    (bpe) and `name` (pretrained). `prepare_workers` processes (None: every core) tokenize chunks
    of `prepare_chunk_mb` MB of text when the cache is built; they change speed and memory, never
    the tokens. `seed` picks the train windows (and nothing else). The folders a run writes into
    are never corpus text: `cache_dir`, `log_dir` (`paths.log_dir`, where run folders go) and the
    running Hydra job's own folder, which `hydra.run.dir` may put elsewhere.
    """

    def __init__(
        self,
        source: Source | str | os.PathLike[str] | list[str],
        tokenizer: Mapping[str, Any] | str,
        block_size: int,
        batch_size: int,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str = "data/cache",
        prepare_workers: int | None = None,
        prepare_chunk_mb: float = 1.0,
        seed: int | None = 0,
        log_dir: str | None = None,
    ) -> None:
        super().__init__()
        source, tokenizer = python_shorthands(source, tokenizer)
        problems = Problems()
        problems.integer("data.block_size", block_size, 1)
        problems.integer("data.batch_size", batch_size, 1)
        problems.integer("data.num_workers", num_workers, 0)
        problems.integer("data.prepare_workers", prepare_workers, 1, optional=True)
        problems.number("data.prepare_chunk_mb", prepare_chunk_mb, low=0, low_open=True)
        problems.integer("data.seed", seed, 0, optional=True)
        if not isinstance(cache_dir, str | os.PathLike) or not str(cache_dir).strip():
            problems.add(f"data.cache_dir={cache_dir!r} is not a folder: pass a path")
        elif Path(cache_dir).expanduser().is_file():  # the corpus was blamed for it
            problems.add(f"data.cache_dir={str(cache_dir)!r} is a file: pass a folder")
        check_tokenizer_config(tokenizer, problems)
        problems.raise_if_any()
        self.source = source
        # A corpus folder may hold the cache, the run folders or this run's own folder.
        written = {"data.cache_dir": cache_dir, "paths.log_dir": log_dir}
        written["paths.output_dir"] = job_folder()
        source.leave_out({key: folder for key, folder in written.items() if folder})
        self.tokenizer_settings = TokenizerSettings.from_config(tokenizer)
        self.block_size = block_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = Path(cache_dir)
        self.prepare_workers = prepare_workers
        self.prepare_chunk_mb = float(prepare_chunk_mb)
        self.seed = 0 if seed is None else int(seed)
        self._cache_path: Path | None = None
        self._tokenizer: PreTrainedTokenizerFast | None = None
        self.train_dataset: RandomWindows | None = None
        self.val_dataset: FixedWindows | None = None

    def prepare_data(self) -> None:
        """Build or reuse the token cache; safe to call from several processes at once.

        Under DDP every process may call it (train.py does, for the vocabulary size): one builds
        the cache under a file lock while the others wait, then all open the same files.
        """
        if self._cache_path is None:
            try:
                self._cache_path = token_cache.build_or_load(
                    self.cache_dir,
                    self.source,
                    self.tokenizer_settings,
                    workers=self.prepare_workers,
                    chunk_mb=self.prepare_chunk_mb,
                )
            except OSError as err:  # the first stat of a path past PATH_MAX: a name, not a trace
                under = str(err.filename or "").startswith(str(self.cache_dir))
                if err.errno != errno.ENAMETOOLONG or not under:  # another path's (a source's)
                    raise
                raise LMTrainError(
                    f"data.cache_dir is {len(str(self.cache_dir)):,} characters long, too long "
                    "for the token cache's paths under it (the file system's limit: "
                    f"{err.strerror}): pass a shorter data.cache_dir (or paths.data_dir)"
                ) from None

    def setup(self, stage: str | None = None) -> None:
        """Memory-map both splits, after checking each holds at least one window.

        Also runs on ranks that skipped `prepare_data`: they find the cache that local rank 0
        built, since the fingerprint is computed from the same inputs.
        """
        meta = token_cache.load_meta(self.cache_path)
        counts = meta["tokens"]
        if counts["train"] + counts["val"] == 0:
            raise LMTrainError(
                f"the corpus {self.source_description} is empty: point data.source at some text"
            )
        total = counts["train"] + counts["val"]
        if total < 2 * (self.block_size + 1):  # no val_fraction makes two windows of it
            raise LMTrainError(
                f"the corpus {self.source_description} has {total} tokens in all, too few for a "
                f"window in each split (2 x (data.block_size + 1) = {2 * (self.block_size + 1)}): "
                "pass more text, or lower data.block_size"
            )
        documents = sum((meta.get("documents") or {"": 2}).values())  # unknown: assume several
        for split in ("train", "val"):
            if counts[split] < self.block_size + 1:
                raise LMTrainError(
                    f"the {split} split has {counts[split]} tokens, fewer than data.block_size + 1 "
                    f"= {self.block_size + 1}: lower data.block_size or "
                    f"{self.source.more_text_hint(split, documents)}"
                )
        paths = {split: self.cache_path / f"{split}.bin" for split in token_cache.SPLITS}
        shape = meta["dtype"], meta["vocab_size"]
        self.train_dataset = RandomWindows(paths["train"], *shape, counts["train"], self.block_size)
        self.val_dataset = FixedWindows(paths["val"], *shape, counts["val"], self.block_size)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        """Random windows with replacement; an epoch is about one pass over the train tokens.

        Whole optimizer steps per epoch, at least one (`lmtrain.data.train_epochs`). Under
        DDP and FSDP the ranks read their shares of one stream (see `lmtrain.data.sampler`), and
        an epoch has as many micro-batches as one process with the same global micro-batch
        (data.batch_size x ranks) would have, so epochs end at the same steps on any number of
        ranks. Inside a Trainer each iteration starts at the windows training has consumed.
        """
        if self.train_dataset is None:
            self.setup("fit")
        dataset = self.train_dataset
        assert dataset is not None
        trainer = self.trainer
        world_size, rank = data_parallel_rank(trainer)
        global_batch = self.batch_size * world_size
        windows_per_epoch = max(1, dataset.n_tokens // self.block_size)
        batches = epoch_micro_batches(windows_per_epoch, global_batch, trainer)
        num_samples = batches * self.batch_size
        sampler = ResumableWindowSampler(
            len(dataset),
            num_samples,
            seed=self.seed,
            rank=rank,
            world_size=world_size,
            batch_size=self.batch_size,
        )
        if trainer is not None:
            sampler.position = trained_windows(trainer, global_batch, sampler)
        return self._loader(dataset, sampler=sampler, drop_last=True, cls=ResumableDataLoader)

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        """Every full val window once, in order."""
        if self.val_dataset is None:
            self.setup("validate")
        assert self.val_dataset is not None
        trainer = self.trainer
        world_size, rank = data_parallel_rank(trainer)
        if world_size == 1:
            return self._loader(self.val_dataset, shuffle=False, drop_last=False)
        fewer = len(self.val_dataset) < world_size  # Lightning's sampler asserts one a rank
        if not isinstance(trainer.strategy, ModelParallelStrategy) and not fewer:
            # Each rank its own windows, none repeated: DistributedSampler pads with repeats,
            # which would bias the window-weighted val/loss away from one process's figure.
            sampler = UnrepeatedDistributedSampler(
                self.val_dataset, num_replicas=world_size, rank=rank, shuffle=False
            )
            return self._loader(self.val_dataset, sampler=sampler, drop_last=False)
        # FSDP: every forward all-gathers the weights, a collective, so every rank must run as
        # many val batches as the others (a rank with one more would wait forever); and fewer
        # windows than ranks. The short ranks get padding windows, which validation_step
        # weighs 0.
        padded = PaddedSampler(self.val_dataset, num_replicas=world_size, rank=rank)
        return self._loader(PaddedWindows(self.val_dataset), sampler=padded, drop_last=False)

    def _loader(
        self, dataset: Dataset[torch.Tensor], cls: type[DataLoader] = DataLoader, **kwargs: Any
    ) -> DataLoader[torch.Tensor]:
        """A loader with its own generator: making an iterator then draws nothing from torch's
        global RNG (DataLoader seeds its workers from it otherwise), so dropout's stream in the
        training step does not depend on how many iterators were made, e.g. by a resume."""
        return cls(
            dataset,
            generator=torch.Generator().manual_seed(self.seed),
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    @property
    def cache_path(self) -> Path:
        """The fingerprint folder of the token cache, which `prepare_data()` builds or finds."""
        if self._cache_path is None:
            # Ranks that skipped prepare_data find the cache local rank 0 built (same inputs).
            self._cache_path = token_cache.find(
                self.cache_dir, self.source, self.tokenizer_settings
            )
        return self._cache_path

    @property
    def tokenizer(self) -> PreTrainedTokenizerFast:
        """The tokenizer saved in the cache, so training, generation and export use the same one."""
        if self._tokenizer is None:
            self._tokenizer = token_cache.load_tokenizer(self.cache_path)
        return self._tokenizer

    @property
    def source_description(self) -> str:
        return self.source.describe()
