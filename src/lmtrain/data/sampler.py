"""Random train windows that a resumed run draws exactly as an uninterrupted one would.

nanoGPT draws train windows with replacement; so does `ResumableWindowSampler`, but its index
stream is a pure function of `(seed, rank, position)`, where `position` counts the windows this
rank has trained on since the run began, over all epochs. The stream is cut into chunks of
`CHUNK` indices, each drawn from its own numpy generator seeded by `(seed, rank, chunk)`, so
starting at any position costs one chunk, never a replay.

Where an iteration starts comes from the training loop, not from how far the sampler iterated:
the loader and Lightning's fetcher read ahead of training, and a kill loses what they read. The
data module passes `position=` a function that reads Lightning's (restored) count of trained
micro-batches. The epoch is only Lightning's bookkeeping here: epoch e+1 starts where epoch e's
training stopped, whatever the epoch lengths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, DistributedSampler

# Indices per independently seeded chunk: a resume draws at most this many to find its place.
CHUNK = 4096

log = logging.getLogger(__name__)


class ResumableWindowSampler(DistributedSampler):
    """`num_samples` window indices per epoch and rank, drawn with replacement from `n_windows`.

    A `DistributedSampler` subclass so that Lightning uses it as is under DDP instead of wrapping
    it; each rank draws its own stream (seeded with its rank), so ranks see different windows.
    `position`, when given, returns the window count to start the next iteration at; without it
    (outside a Trainer), epoch e starts at e * num_samples.
    """

    def __init__(
        self,
        n_windows: int,
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] | None = None,
    ) -> None:
        # No super().__init__: it wants a dataset and sizes the epoch from it; set what it would.
        self.n_windows = n_windows
        self.num_samples = num_samples
        self.total_size = num_samples * world_size
        self.seed = seed
        self.rank = rank
        self.num_replicas = world_size
        self.shuffle = True
        self.drop_last = False
        self.epoch = 0
        self.position = position

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        start = self.position() if self.position is not None else self.epoch * self.num_samples
        return self.indices(start, self.num_samples)

    def indices(self, start: int, count: int) -> Iterator[int]:
        """Window indices `start`, ..., `start + count - 1` of this rank's stream."""
        chunk, offset = divmod(start, CHUNK)
        while count > 0:
            block = self.chunk(chunk)[offset : offset + count]
            yield from block.tolist()
            count -= len(block)
            chunk, offset = chunk + 1, 0

    def chunk(self, index: int) -> np.ndarray:
        """Chunk `index` of the stream: a pure function of (seed, rank, index)."""
        entropy = [self.seed, self.rank, index]
        rng = np.random.default_rng(np.random.SeedSequence(entropy))
        return rng.integers(0, self.n_windows, size=CHUNK, dtype=np.int64)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose state (its sampler's seed and position) goes into checkpoints.

    Lightning saves `state_dict()` of a train loader that has one and calls `load_state_dict()`
    before the first resumed iteration (and stops warning that the loader is not resumable). The
    position is read from the restored training loop either way; the saved one only checks it.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableWindowSampler):
            return {}
        position = sampler.position() if sampler.position is not None else None
        return {"seed": sampler.seed, "rank": sampler.rank, "position": position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableWindowSampler):
            return
        if sampler.position is not None and state.get("position") is not None:
            now = sampler.position()
            if now != state["position"]:
                log.warning(
                    "The checkpoint's train sampler was at window %d, the restored training loop "
                    "has trained %d windows: resuming at %d",
                    state["position"],
                    now,
                    now,
                )
