"""Random train windows that a resumed run draws exactly as an uninterrupted one would, on any
number of ranks.

nanoGPT draws train windows with replacement; so does `ResumableWindowSampler`, but its index
stream is a pure function of `(seed, position)`, where `position` counts the windows all ranks
together have trained on since the run began, over all epochs. The stream is cut into chunks of
`CHUNK` indices, each drawn from its own numpy generator seeded by `(seed, 0, chunk)`, so
starting at any position costs one chunk, never a replay.

There is one stream for the whole run, not one per rank: a global micro-batch is the next
`batch_size * world_size` positions, and rank r reads the r-th `batch_size` of them. So two
ranks with 4 windows each read exactly the 8 windows one process with a batch of 8 reads, and a
checkpoint resumes on another number of ranks where the stream left off (same global micro-batch:
see `ResumableDataLoader.load_state_dict`).

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
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch.utils.data import DataLoader, DistributedSampler

from lmtrain.errors import RankAgreedError

# Indices per independently seeded chunk: a resume draws at most this many to find its place.
CHUNK = 4096

log = logging.getLogger(__name__)


class ResumableWindowSampler(DistributedSampler):
    """`num_samples` window indices per epoch and rank, drawn with replacement from `n_windows`.

    A `DistributedSampler` subclass so that Lightning uses it as is under DDP and FSDP instead of
    wrapping it. Rank `rank` of `world_size` reads its `batch_size` share of every global
    micro-batch of the one stream. `position`, when given, returns the global window count to
    start the next iteration at; without it (outside a Trainer), or when it returns None, epoch
    e starts at e * num_samples * world_size.
    """

    def __init__(
        self,
        n_windows: int,
        num_samples: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int | None] | None = None,
        batch_size: int = 1,
    ) -> None:
        # No super().__init__: it wants a dataset and sizes the epoch from it; set what it would.
        self.n_windows = n_windows
        self.num_samples = num_samples
        self.total_size = num_samples * world_size
        self.seed = seed
        self.rank = rank
        self.num_replicas = world_size
        self.batch_size = batch_size
        self.shuffle = True
        self.drop_last = False
        self.epoch = 0
        self.position = position
        # Global windows to add to `position()`: nonzero after a resume on another world size
        # or micro-batch (the loop's count of micro-batches then meant other windows).
        self.offset = 0

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return self.indices(self.start(), self.num_samples)

    def start(self) -> int:
        """The global stream position the next iteration starts at: `position()` (None when
        no trainer iterates this sampler), or else the epoch's first."""
        position = self.position() if self.position is not None else None
        if position is None:
            return self.epoch * self.total_size
        return position + self.offset

    def indices(self, start: int, count: int) -> Iterator[int]:
        """This rank's first `count` window indices from global position `start` on."""
        share, step = self.batch_size, self.batch_size * self.num_replicas
        for k in range(0, count, share):
            first = start + (k // share) * step + self.rank * share
            yield from self.stream(first, min(share, count - k))

    def stream(self, start: int, count: int) -> Iterator[int]:
        """Global stream positions `start`, ..., `start + count - 1`."""
        chunk, offset = divmod(start, CHUNK)
        while count > 0:
            block = self.chunk(chunk)[offset : offset + count]
            yield from block.tolist()
            count -= len(block)
            chunk, offset = chunk + 1, 0

    def chunk(self, index: int) -> np.ndarray:
        """Chunk `index` of the stream: a pure function of (seed, index). The 0 in the seed is
        where earlier versions put the rank: one process draws the windows it always drew."""
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0, index]))
        return rng.integers(0, self.n_windows, size=CHUNK, dtype=np.int64)


class ResumableDataLoader(DataLoader):
    """A DataLoader whose state (its sampler's seed, global position and split) goes into
    checkpoints.

    Lightning saves `state_dict()` of a train loader that has one and calls `load_state_dict()`
    before the first resumed iteration, after the training loop's counters are restored.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        if not isinstance(sampler, ResumableWindowSampler):
            return {}
        position = sampler.start() if sampler.position is not None else None
        return {
            "seed": sampler.seed,
            "rank": sampler.rank,
            "position": position,
            "stream": "global",  # earlier versions: one stream per rank, position per rank
            "world_size": sampler.num_replicas,
            "batch_size": sampler.batch_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream at the checkpoint's global position.

        On another number of ranks, the global micro-batch (data.batch_size x ranks) must stay
        the checkpoint's: Lightning's restored counters (micro-batches of this epoch, the
        accumulation phase) count micro-batches, and would otherwise point into other steps than
        the interrupted run's. A new data.batch_size on the same ranks is the user's choice, as
        it always was: the stream goes on where it stopped.
        """
        sampler = self.sampler
        if not state or not isinstance(sampler, ResumableWindowSampler):
            return
        if state.get("stream") != "global":
            return  # an older checkpoint: its per-rank streams cannot be continued anyway
        trained = sampler.position() if sampler.position is not None else None
        if trained is None:  # no trainer's count to go on from: epochs count
            if state.get("position") is None:  # nor had the saved run
                return
            rank_zero_warn(
                "the train loader was not made for the trainer that resumes it (taken from "
                "the data module by hand?): it reads from the epoch's first windows, not from "
                f"window {state['position']} where the checkpoint stopped; pass the data module "
                "to trainer.fit to resume exactly"
            )
            return
        saved = (state["world_size"], state["batch_size"])
        now = (sampler.num_replicas, sampler.batch_size)
        if saved[0] != now[0] and saved[0] * saved[1] != now[0] * now[1]:
            raise RankAgreedError(
                f"the checkpoint was trained on {saved[0]} rank(s) x data.batch_size={saved[1]} "
                f"= {saved[0] * saved[1]} windows per micro-batch, this run reads "
                f"{now[0]} x {now[1]} = {now[0] * now[1]}: resume with data.batch_size x "
                f"devices = {saved[0] * saved[1]} (e.g. data.batch_size="
                f"{saved[0] * saved[1] // now[0]} on {now[0]} rank(s)), or start a new run"
            )
        sampler.offset = state["position"] - trained
        if saved[0] != now[0]:
            log.info(
                "Resuming a run of %d rank(s) on %d: the window stream goes on at window %d",
                saved[0],
                now[0],
                state["position"],
            )
