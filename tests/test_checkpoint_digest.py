"""A checkpoint damaged on disk after it was saved is refused in one line, by eval and by a resume;
an intact one loads as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.utils.checkpoint_io import AtomicCheckpointIO
from lmtrain.utils.safe_load import load_torch_file
from lmtrain.utils.tensor_digest import DIGEST_KEY
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import train_tiny


def damage_largest_tensor(path: Path) -> None:
    """Overwrite the stored bytes of the checkpoint's largest tensor with others of the same
    size, in place: the file still unpickles, as one damaged by the disk would."""
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    tensor = max(state.values(), key=lambda t: t.numel())
    stored = tensor.contiguous().view(torch.uint8).numpy().tobytes()
    data = path.read_bytes()
    offset = data.find(stored[:256])
    assert offset >= 0, "the tensor's bytes were not found in the file"
    garbage = bytes((b + 1) % 256 for b in stored)
    path.write_bytes(data[:offset] + garbage + data[offset + len(stored) :])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("digest")
    corpus = one_file_corpus(tmp / "corpus")
    return train_tiny(tmp / "run", tmp / "data", corpus, "logger=none")


def test_checkpoints_carry_a_digest_that_an_intact_file_matches(trained: Path) -> None:
    checkpoint = load_torch_file(trained)  # verifies
    assert len(checkpoint[DIGEST_KEY]) == 64
    assert AtomicCheckpointIO().load_checkpoint(trained)["global_step"] == checkpoint["global_step"]


def test_a_damaged_checkpoint_is_one_line_for_eval_and_resume(
    trained: Path, tmp_path: Path, data_dir: Path
) -> None:
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(trained.read_bytes())
    damage_largest_tensor(damaged)
    with pytest.raises(LMTrainError, match="is damaged: its tensors do not match the checksum"):
        load_torch_file(damaged)
    with pytest.raises(LMTrainError, match="is damaged"):
        AtomicCheckpointIO().load_checkpoint(damaged)
    evaluated = run_cli("eval", f"ckpt_path={damaged}", f"paths.log_dir={tmp_path / 'logs'}")
    assert_one_line_error(evaluated, "is damaged", str(damaged))
    resume = run_cli("train", *tiny_cli(tmp_path, data_dir, f"ckpt_path={damaged}"))
    assert_one_line_error(resume, "is damaged", str(damaged))
