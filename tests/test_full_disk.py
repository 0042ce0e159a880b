"""A disk that fills up while a run saves a checkpoint: one `error:` line naming the file and the
setting to change, a non-zero exit on every rank, and the checkpoints saved before left as they
were. torch.save raised a RuntimeError ("unexpected pos") from deep inside torch, the sharded
save a CheckpointException per rank, and under DDP the other rank's broken collective buried
rank 0's line. RLIMIT_FSIZE makes the kernel refuse the write as a full disk would (EFBIG).
The token cache and the export on a full disk: tests/data/test_bad_files.py and
tests/test_foreign_run_folders.py.
"""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

STRATEGIES = {
    "one-process": ["trainer=cpu"],
    "ddp": ["trainer=ddp_cpu", "data.batch_size=4"],
    "fsdp": ["trainer=fsdp_cpu", "data.batch_size=4"],
}


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_full_disk_at_a_checkpoint_save_is_one_line_and_keeps_the_earlier_ones(
    tmp_path: Path, data_dir: Path, strategy: str
) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cli += [*STRATEGIES[strategy], "trainer.val_check_interval=4"]
    cli += [f"hydra.run.dir={tmp_path / 'run'}"]
    first = run_cli("train", *cli)
    assert first.returncode == 0, first.stderr[-3000:]
    folder = tmp_path / "run" / "checkpoints"
    before = contents(folder)
    limit = max(len(data) for data in before.values()) // 2  # the weights no longer fit
    result = run_cli(
        "train",
        *cli,
        "ckpt_path=last",
        "trainer.max_steps=8",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert_one_line_error(
        result,
        f"could not write the checkpoint {folder}/",
        f"(File too large): free space in {folder}, or set callbacks.model_checkpoint.dirpath=",
    )
    assert contents(folder) == before  # no temporary file or folder left either
