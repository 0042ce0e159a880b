"""A user error raised in a DataLoader worker is still one `error:` line with its own message.

PyTorch re-raises a worker's error in the main process with a message of its own ("Caught
LMTrainError in DataLoader worker process 0." and the worker's traceback); the entry points print
the message the worker raised instead (`lmtrain.errors.user_message`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lmtrain.data.checksums import BLOCK_BYTES, SAMPLED_BLOCKS
from lmtrain.data.sources import TextFilesSource
from lmtrain.data.token_cache import build_or_load
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError, NonFiniteLossError, user_message
from lmtrain.utils.task import task_wrapper
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import fast_dev_run_cli, run_cli
from tests.helpers.corpora import one_file_corpus

MESSAGE = "data.source.path='x.txt' holds a bad window: delete the cache and run again"


class Refusing(Dataset[torch.Tensor]):
    """A dataset whose every item raises `kind(MESSAGE)`, as the window check does."""

    def __init__(self, kind: type[LMTrainError] = LMTrainError) -> None:
        self.kind = kind

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        raise self.kind(MESSAGE)


def read_all(kind: type[LMTrainError] = LMTrainError) -> None:
    for _ in DataLoader(Refusing(kind), batch_size=2, num_workers=1):
        pass


@pytest.mark.parametrize("kind", [LMTrainError, NonFiniteLossError])
def test_a_worker_error_is_recovered_as_raised(kind: type[LMTrainError]) -> None:
    with pytest.raises(kind) as caught:
        read_all(kind)
    assert str(caught.value).startswith(f"Caught {kind.__name__} in DataLoader worker process 0.")
    assert user_message(caught.value) == MESSAGE
    assert user_message(kind(MESSAGE)) == MESSAGE  # not from a worker: as it is


def test_an_entry_point_prints_a_worker_error_as_its_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        task_wrapper(read_all)()
    assert exit_.value.code == 1
    assert capsys.readouterr().err == f"error: {MESSAGE}\n"


def test_a_damaged_cache_read_by_a_worker_is_one_line(tmp_path: Path) -> None:
    """lmtrain.train with data.num_workers=1 on a cache damaged between its sampled blocks (as
    in test_cache_trust): the window check raises in the worker, the run prints its line."""
    corpus = one_file_corpus(tmp_path / "corpus")
    corpus.write_text(corpus.read_text() * 40)  # train.bin well over 64 blocks of 4 KiB
    source, char = TextFilesSource(str(corpus)), TokenizerSettings("char")
    folder = build_or_load(tmp_path / "data" / "cache", source, char, workers=1)
    train = folder / "train.bin"
    size = train.stat().st_size
    step = max(BLOCK_BYTES, size // SAMPLED_BLOCKS)
    assert step > 2 * BLOCK_BYTES, "the damage must fall between the sampled blocks"
    with train.open("r+b") as f:  # every byte the sampled checksum does not read: id 65535
        for offset in range(0, size, step):
            end = min(offset + step, size)
            f.seek(offset + BLOCK_BYTES)
            f.write(b"\xff" * max(0, end - offset - BLOCK_BYTES))
    result = run_cli("train", *fast_dev_run_cli(corpus, tmp_path), "data.num_workers=1")
    assert_one_line_error(result, f"{train} holds the id 65535", "past the vocabulary")
