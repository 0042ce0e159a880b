"""A damaged sharded `last.ckpt` (trainer=fsdp) whose advice names another sharded folder: the
part for eval, generate and export names a file they read, not the folder they refuse ("is a
sharded checkpoint folder: merge it into one file first"; red team dist26 #3).

The folders are written in this process in the layout trainer=fsdp writes (`state_dict`,
`optimizer_0`, `meta.pt` with lmtrain's entry and the checksums of the files), the damaged one
refused by the real `python -m lmtrain.strategies consolidate`; an undamaged run's folders and a
damaged shard of a real two-rank run: tests/test_sharded_digest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import model_path
from lmtrain.utils.damaged_checkpoint import advice_key, instead
from lmtrain.utils.shard_digest import SHARD_DIGESTS_KEY, record
from lmtrain.utils.sharded_layout import SHARDED_META_FILE
from tests.helpers.assertions import assert_one_line_error
from tests.test_consolidate_inputs import consolidate_cli, sharded_checkpoint

BEST = "best-step=6-val_loss=3.3554.ckpt"
LMTRAIN = {"hf_config": {"model_type": "gpt2"}, "tokenizer_files": {"tokenizer.json": "{}"}}


def fsdp_save(folder: Path) -> Path:
    """`folder` as trainer=fsdp saves it: the shards, and a `meta.pt` with lmtrain's entry and
    the size and checksum of every file (what a damaged shard is found by)."""
    sharded_checkpoint(folder)
    meta = folder / SHARDED_META_FILE
    digests = record(folder, folder)
    entries = {**torch.load(meta, weights_only=True), "lmtrain": LMTRAIN}
    torch.save({**entries, SHARD_DIGESTS_KEY: digests}, meta)
    return folder


@pytest.fixture
def checkpoints(tmp_path: Path) -> Path:
    """A run's checkpoints folder: a best folder, then last.ckpt with one shard damaged."""
    folder = tmp_path / "run" / "checkpoints"
    fsdp_save(folder / BEST)
    shard = fsdp_save(folder / "last.ckpt") / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return folder


def test_the_advice_for_eval_consolidates_the_other_sharded_folder_and_the_command_works(
    checkpoints: Path,
) -> None:
    """The red team's case: the advice was `ckpt_path=<best folder>`, which eval refuses."""
    last, best = checkpoints / "last.ckpt", checkpoints / BEST
    merged = checkpoints / "best-step=6-val_loss=3.3554.consolidated.ckpt"
    command = f"python -m lmtrain.strategies consolidate {best}"
    line = assert_one_line_error(consolidate_cli(last), f"ckpt_path='{last}' is damaged")
    assert line.endswith(
        f"move it aside (mv {last} {last}.damaged): resume= and ckpt_path=last then go on from "
        f"{BEST} (eval, generate, export: ckpt_path={merged} once `{command}` has merged the "
        "folder into it)"
    ), line
    with pytest.raises(LMTrainError, match="is a sharded checkpoint folder"):
        model_path(best)  # what eval, generate and export say of the folder itself
    # The command as quoted writes the file named, which they take.
    followed = consolidate_cli(*command.split()[4:])
    assert followed.returncode == 0, followed.stderr[-2000:]
    assert merged.is_file()
    assert model_path(merged) == str(merged)


def test_a_consolidated_file_beside_the_other_folder_is_named_itself(checkpoints: Path) -> None:
    """Once merged, the file is named, for eval and for `load_from_checkpoint` alike; the folder
    stays the one resume= goes on from where it is the newer (a copy that reset the times)."""
    last, best = checkpoints / "last.ckpt", checkpoints / BEST
    merged = checkpoints / "best-step=6-val_loss=3.3554.consolidated.ckpt"
    assert consolidate_cli(best).returncode == 0
    newer = merged.stat().st_mtime_ns + 10**9
    os.utime(best, ns=(newer, newer))
    assert instead(last).endswith(
        f"go on from {BEST} (eval, generate, export: ckpt_path={merged})"
    ), instead(last)
    with advice_key("checkpoint_path"):
        assert instead(last).endswith(f"go on from {BEST} (or load: checkpoint_path={merged})")


def test_a_damaged_other_checkpoint_is_told_of_the_folder_for_fsdp_and_the_merge_for_eval(
    checkpoints: Path,
) -> None:
    """A damaged checkpoint not named last.ckpt: pass another, the folder with trainer=fsdp only."""
    best = checkpoints / BEST
    damaged = checkpoints / "step=4.ckpt"
    damaged.write_bytes(b"not a checkpoint")
    merged = checkpoints / "best-step=6-val_loss=3.3554.consolidated.ckpt"
    # last.ckpt (damaged) is the newer folder: make the best one the newest to be named.
    newer = (checkpoints / "last.ckpt").stat().st_mtime_ns + 10**9
    os.utime(best, ns=(newer, newer))
    assert instead(damaged) == (
        f"pass another checkpoint, e.g. ckpt_path={best} with trainer=fsdp (eval, generate, "
        f"export: ckpt_path={merged} once `python -m lmtrain.strategies consolidate {best}` has "
        "merged the folder into it)"
    )
