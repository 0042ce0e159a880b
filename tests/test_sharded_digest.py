"""A sharded checkpoint folder (trainer=fsdp) damaged on disk after it was saved is refused in one
line, by a resume on two ranks and by `consolidate`, and left as it is; the file `consolidate`
writes carries the digest every lmtrain reader checks; `consolidate` into a folder it may not
write is one line, with nothing written.

One real two-rank `trainer=fsdp_cpu` run (module-scoped) writes the folder; each test damages a
copy of it. The checksums: lmtrain.utils.shard_digest. An undamaged folder resuming on two
ranks, and consolidating: tests/test_fsdp2.py, tests/test_full_disk.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import load_model, resolve_ckpt_path
from lmtrain.strategies import consolidate
from lmtrain.utils.shard_digest import SHARD_DIGESTS_KEY
from lmtrain.utils.tensor_digest import DIGEST_KEY
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.faults import mounted_tmpfs
from tests.test_consolidate_inputs import consolidate_cli, sharded_checkpoint

FSDP = ["trainer=fsdp_cpu", "data.batch_size=4"]
MISMATCH = "does not match the checksum written with it (the file changed on disk after it was"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, list[str]]:
    """A finished 4-step run on two FSDP ranks, and the overrides it ran with."""
    root = tmp_path_factory.mktemp("sharded_digest")
    cli = tiny_cli(root, data_dir, "logger=none", "callbacks.text_samples=null", *FSDP)
    out = run_cli("train", *cli, f"hydra.run.dir={root / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    return root / "run", cli


def last_copy(trained: tuple[Path, list[str]], tmp_path: Path) -> Path:
    """A copy of the run's last.ckpt folder, alone in `tmp_path/checkpoints`."""
    return Path(shutil.copytree(trained[0] / "checkpoints" / "last.ckpt", tmp_path / "last.ckpt"))


def flip(path: Path, offset: int, count: int = 400) -> None:
    """Invert `count` bytes of `path` from `offset`, in place: the size stays the same."""
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(b ^ 0xFF for b in data[offset : offset + count])
    path.write_bytes(bytes(data))


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_damaged_shard_is_refused_by_a_resume_and_by_consolidate_and_left_as_it_is(
    trained: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """The red team's case: consolidate merged it (rc 0, an optimizer state off by 1e28) and a
    resume trained on it, until the NaN guard replaced last.ckpt."""
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    last = run / "checkpoints" / "last.ckpt"
    shard = last / "__1_0.distcp"
    flip(shard, shard.stat().st_size // 2)
    before = contents(run / "checkpoints")
    expected = f"ckpt_path='{last}' is damaged: __1_0.distcp {MISMATCH}"

    merged = consolidate_cli(last)
    assert merged.returncode == 1
    assert_one_line_error(merged, expected, f"move it aside (mv {last} {last}.damaged): resume=")
    # Both ranks check their share and stop together: one line, exit 1, no hang.
    resumed = run_cli(
        "train", *trained[1], f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=8",
        timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 1
    assert_one_line_error(resumed, expected)
    assert contents(run / "checkpoints") == before  # no consolidated file, last.ckpt as it was


def test_the_checksums_cover_every_file_dcp_wrote_and_the_merged_file_carries_a_digest(
    trained: tuple[Path, list[str]], tmp_path: Path
) -> None:
    last = trained[0] / "checkpoints" / "last.ckpt"
    meta = torch.load(last / "meta.pt", map_location="cpu", weights_only=True)
    recorded = meta[SHARD_DIGESTS_KEY]
    assert set(recorded) == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    for name, (size, digest) in recorded.items():
        assert size == (last / name).stat().st_size and len(digest) == 64, name

    merged = consolidate(last, tmp_path / "merged.ckpt")
    checkpoint = torch.load(merged, map_location="cpu", weights_only=True)
    assert SHARD_DIGESTS_KEY not in checkpoint and len(checkpoint[DIGEST_KEY]) == 64
    assert load_model(merged).info["global_step"] == 4  # as eval, generate and export read it
    # Damaged: the bytes of its largest tensor changed, the file still unpickles.
    tensor = max(checkpoint["state_dict"].values(), key=lambda t: t.numel())
    data = merged.read_bytes()
    offset = data.find(tensor.contiguous().view(torch.uint8).numpy().tobytes()[:256])
    assert offset > 0
    flip(merged, offset, 64)
    with pytest.raises(LMTrainError, match=r"merged\.ckpt' is damaged: its tensors do not match"):
        load_model(merged)


def test_a_file_cut_short_missing_or_damaged_metadata_stops_before_any_shard_is_read(
    trained: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """Sizes and `.metadata` (unpickled first) are checked where training checks a checkpoint
    before any work starts; a folder saved without checksums is read as before."""
    last = last_copy(trained, tmp_path)
    metadata = last / ".metadata"
    flip(metadata, metadata.stat().st_size // 2, 16)
    with pytest.raises(LMTrainError, match=rf"is damaged: \.metadata {re.escape(MISMATCH)}"):
        resolve_ckpt_path(str(last), tmp_path)

    last = last_copy(trained, tmp_path / "short")
    size = (last / "__0_0.distcp").stat().st_size
    with open(last / "__0_0.distcp", "r+b") as file:
        file.truncate(size - 10)
    with pytest.raises(LMTrainError, match=rf"__0_0.distcp is {size - 10} bytes, not {size}"):
        consolidate(last, tmp_path / "short.ckpt")

    last = last_copy(trained, tmp_path / "missing")
    (last / "__1_0.distcp").unlink()
    with pytest.raises(LMTrainError, match=r"is damaged: __1_0.distcp is missing"):
        resolve_ckpt_path(str(last), tmp_path)
    assert not (tmp_path / "short.ckpt").exists()

    # An older save: no checksums in meta.pt, so the same damage goes unseen, as before.
    last = last_copy(trained, tmp_path / "older")
    meta = torch.load(last / "meta.pt", map_location="cpu", weights_only=True)
    del meta[SHARD_DIGESTS_KEY]
    torch.save(meta, last / "meta.pt")
    flip(last / "__1_0.distcp", (last / "__1_0.distcp").stat().st_size // 2)
    assert consolidate(last, tmp_path / "older.ckpt").is_file()


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of our own, which the test remounts read-only (refused to root too)."""
    with mounted_tmpfs(tmp_path / "mount", "size=4m") as folder:
        yield folder


def test_consolidating_where_it_cannot_write_is_one_line_and_writes_nothing(
    mount: Path, tmp_path: Path
) -> None:
    """It was a PermissionError traceback, after the shards were read."""
    folder = sharded_checkpoint(mount / "last.ckpt")
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    before = contents(mount)
    fix = "(Read-only file system): pass --output <a writable file>"

    default = consolidate_cli(folder)  # beside the folder
    assert default.returncode == 1
    assert_one_line_error(default, f"cannot write {mount / 'last.consolidated.ckpt'} {fix}")
    nested = consolidate_cli(folder, "--output", mount / "new" / "merged.ckpt")
    assert_one_line_error(nested, f"cannot write {mount / 'new' / 'merged.ckpt'} {fix}")
    assert contents(mount) == before

    a_file = tmp_path / "a-file"
    a_file.write_text("kept\n")
    with pytest.raises(LMTrainError, match=r"a-file/merged.ckpt \(Not a directory\): pass --out"):
        consolidate(folder, a_file / "merged.ckpt")
    written = consolidate_cli(folder, "--output", tmp_path / "merged.ckpt")
    assert written.returncode == 0, written.stderr[-3000:]
    assert a_file.read_text() == "kept\n"
