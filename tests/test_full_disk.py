"""A disk that fills up while a run saves a checkpoint: one `error:` line naming the file and the
setting to change, a non-zero exit on every rank, and the checkpoints saved before left as they
were. torch.save raised a RuntimeError ("unexpected pos") from deep inside torch, the sharded
save a CheckpointException per rank, and under DDP the other rank's broken collective buried
rank 0's line. RLIMIT_FSIZE makes the kernel refuse the write as a full disk would (EFBIG).
The token cache and the export on a full disk: tests/data/test_bad_files.py and
tests/test_foreign_run_folders.py.
"""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import pytest

from lmtrain.utils.task import peer_gone
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.tmpfs import mounted_tmpfs

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
    if strategy == "ddp":  # rank 0 alone saves; rank 1's broken collective says only this
        assert "rank 1: stopped, as another rank of the run did" in result.stderr


def test_consolidating_onto_a_full_disk_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=none", *STRATEGIES["fsdp"])
    first = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert first.returncode == 0, first.stderr[-3000:]
    sharded = tmp_path / "run" / "checkpoints" / "last.ckpt"
    output = tmp_path / "merged.ckpt"
    limit = max(p.stat().st_size for p in sharded.iterdir())  # the merged file is larger
    result = run_cli(
        "strategies",
        "consolidate",
        str(sharded),
        f"--output={output}",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert_one_line_error(
        result, f"could not write the checkpoint {output} (File too large): free space in "
    )
    assert "pass --output <a file on a disk with room>" in result.stderr
    assert list(tmp_path.glob("*merged*")) == []


def test_a_full_disk_under_a_loggers_folder_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    """The last resort (lmtrain.utils.task): any write a full disk stops, here Lightning's CSV
    logger's, is one line and not a traceback."""
    with mounted_tmpfs(tmp_path / "full", "size=64k") as full:
        with contextlib.suppress(OSError):
            (full / "filler").write_bytes(bytes(1 << 20))
        result = run_cli(
            "train",
            *tiny_cli(tmp_path, data_dir, "logger=csv", f"logger.csv.save_dir={full}"),
        )
    assert_one_line_error(
        result, "(No space left on device): free space on that disk, or point paths.log_dir"
    )


@pytest.mark.parametrize(
    ("words", "gone"),
    [
        ("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1", True),
        ("NCCL error: remote process exited or there was a network error", True),
        ("Connection closed by remote peer", True),
        ("CUDA out of memory", False),
    ],
)
def test_a_peer_gone_is_told_from_other_failures(words: str, gone: bool) -> None:
    """What lets a rank > 0 leave quietly when rank 0 stopped on its own error; anything else
    is that rank's own traceback."""
    assert peer_gone(RuntimeError(words)) is gone
    assert not peer_gone(ValueError(words))
