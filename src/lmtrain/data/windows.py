"""The datasets of a token cache's splits: windows of `block_size + 1` tokens.

Train windows start at every offset (the sampler picks which, `lmtrain.data.sampler`); val windows
tile the split; under FSDP the shorter ranks' val batches are padded with whole windows of
`PAD_TOKEN`, which the loss and the metrics weigh 0 (`lmtrain.models.metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from lmtrain.errors import LMTrainError


class _TokenWindows(Dataset[torch.Tensor]):
    """Windows of `block_size + 1` tokens from a token file, opened lazily in each process.

    Holding the path instead of the memmap keeps the dataset cheap to pickle into dataloader
    workers under the spawn start method (a pickled memmap would copy the whole split).
    """

    def __init__(
        self, path: Path, dtype: str, vocab_size: int, n_tokens: int, block_size: int
    ) -> None:
        self.path = path
        self.dtype = dtype
        self.vocab_size = vocab_size
        self.n_tokens = n_tokens
        self.block_size = block_size
        self._tokens: np.memmap | None = None

    @property
    def tokens(self) -> np.memmap:
        if self._tokens is None:
            self._tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        return self._tokens

    def window(self, start: int) -> torch.Tensor:
        """Tokens `start` to `start + block_size`, checked to be inside the vocabulary.

        The cache's sampled checksums can miss damage between their blocks; an id past the
        vocabulary would crash the embedding lookup with an IndexError mid-run. The check here
        costs ~1 us a window (a max over 65 ints), where a scan of the whole file at every start
        would cost seconds on a corpus of GBs.
        """
        ids = self.tokens[start : start + self.block_size + 1].astype(np.int64)
        if ids.size and int(ids.max()) >= self.vocab_size:
            raise LMTrainError(
                f"{self.path} holds the id {int(ids.max())} at tokens {start}-"
                f"{start + self.block_size}, past the vocabulary of {self.vocab_size}: the token "
                f"cache is damaged; delete {self.path.parent} and run again to rebuild it"
            )
        return torch.from_numpy(ids)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_tokens": None}


class RandomWindows(_TokenWindows):
    """Train: a window at every start offset; the sampler picks which ones an epoch sees."""

    def __len__(self) -> int:
        return self.n_tokens - self.block_size

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.window(index)


class FixedWindows(_TokenWindows):
    """Val: back-to-back windows at 0, block_size, 2 * block_size, ..., without a partial last one.

    Consecutive windows share one token, so every token after the first is a target exactly once.
    """

    def __len__(self) -> int:
        return (self.n_tokens - 1) // self.block_size

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.window(index * self.block_size)


# The token of a padding window (all of it): no tokenizer's id, so it cannot be real data.
PAD_TOKEN = -1


class PaddedWindows(Dataset[torch.Tensor]):
    """`windows` and one more index, `len(windows)`: a window of `PAD_TOKEN` only."""

    def __init__(self, windows: FixedWindows) -> None:
        self.windows = windows

    def __len__(self) -> int:
        return len(self.windows) + 1

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == len(self.windows):
            return torch.full((self.windows.block_size + 1,), PAD_TOKEN, dtype=torch.int64)
        return self.windows[index]


class PaddedSampler(DistributedSampler):
    """This rank's val windows, none repeated, then as many `len(dataset)` indices (padding, in
    `PaddedWindows`) as make every rank's count the longest rank's. Its own windows are those
    Lightning's UnrepeatedDistributedSampler gives (every `num_replicas`-th from `rank`), which
    asserts at least one a rank: a val split of fewer windows than ranks was an AssertionError.
    A DistributedSampler, so that Lightning uses it as is."""

    def __init__(self, dataset: FixedWindows, num_replicas: int, rank: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.own = range(rank, len(dataset), num_replicas)
        self.padded_size = -(-len(dataset) // num_replicas)

    def __iter__(self) -> Iterator[int]:
        yield from self.own
        yield from [len(self.dataset)] * (self.padded_size - len(self.own))

    def __len__(self) -> int:
        return self.padded_size
