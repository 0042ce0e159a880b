"""A run folder that becomes unwritable mid-run (a folder made read-only, a disk remounted
read-only, a quota's EPERM): one `error:` line naming the file and what to do, a non-zero exit,
and what was written before left as it was. The save ended in a traceback that named only a
temporary file (`PermissionError: ....ckpt.tmp-<pid>`), and the CSV logger's in two chained ones
(its save, then its finalize as Lightning stopped). The full disk: tests/test_full_disk.py.

The run drops root's file access (`drop_root_file_access`), so the modes apply to it as root;
`MakeReadOnly`, a callback given on the command line, takes the write permission away.
"""

from __future__ import annotations

import csv
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import Callback, LightningModule, Trainer

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.faults import drop_root_file_access

# A child that checks file modes even as root.
AS_A_USER = drop_root_file_access if os.geteuid() == 0 else None
WRITE = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH


class MakeReadOnly(Callback):
    """Takes the write permission from `path` (a folder or a file) once optimizer step `step`
    (1-based) has ended: `+callbacks.ro._target_=tests.test_write_failures.MakeReadOnly
    +callbacks.ro.path=<path> +callbacks.ro.step=3`."""

    def __init__(self, path: str, step: int) -> None:
        self.path, self.step = Path(path), step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *_: Any) -> None:
        if trainer.global_step == self.step:
            self.path.chmod(self.path.stat().st_mode & ~WRITE)


def make_read_only(path: Path, step: int) -> list[str]:
    name = "+callbacks.read_only"
    return [
        f"{name}._target_={__name__}.MakeReadOnly",
        f"{name}.path={path}",
        f"{name}.step={step}",
    ]


def writable(path: Path) -> None:
    path.chmod(path.stat().st_mode | stat.S_IWUSR)


def losses(metrics_csv: Path) -> list[tuple[str, str, str]]:
    """(step, train/loss, val/loss) of each row that has a loss, in the file's order."""
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    found = [(row["step"], row.get("train/loss", ""), row.get("val/loss", "")) for row in rows]
    return [row for row in found if row[1] or row[2]]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> list[tuple]:
    """The losses of the run the CSV tests make, uninterrupted."""
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    result = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    return losses(tmp_path / "run" / "csv" / "metrics.csv")


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_checkpoint_folder_made_read_only_is_one_line_and_the_run_resumes(
    tmp_path: Path, data_dir: Path
) -> None:
    """Validations after steps 2 and 4: the first saves last.ckpt and the best checkpoint, the
    folder goes read-only after step 3, and the second's save of the new best is refused."""
    run = tmp_path / "run"
    folder = run / "checkpoints"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cli += [f"hydra.run.dir={run}"]
    result = run_cli("train", *cli, *make_read_only(folder, 3), preexec_fn=AS_A_USER)
    line = assert_one_line_error(
        result,
        f"could not write the checkpoint {folder}/",
        f"make {folder} writable, then resume with ckpt_path=last hydra.run.dir={run}",
        "the checkpoints saved before it are intact",
    )
    assert "(Permission denied)" in line and ".tmp-" not in line, line
    before = contents(folder)
    assert "last.ckpt" in before and len(before) == 2, sorted(before)  # no temporary file left

    writable(folder)  # what the line says to do
    resumed = run_cli("train", *cli, "ckpt_path=last", preexec_fn=AS_A_USER)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr + resumed.stdout


@pytest.mark.parametrize("made_read_only", ["csv", "csv/metrics.csv", "csv/batch_starts"])
def test_a_csv_logger_file_made_read_only_is_one_line_and_the_run_resumes(
    tmp_path: Path, data_dir: Path, made_read_only: str, uninterrupted: list[tuple]
) -> None:
    """Validations after steps 2 and 4, csv/ (or a file of it) read-only after step 3: the
    folder refuses the replace that widens metrics.csv for step 4's new (throughput) columns,
    metrics.csv the next row's append, batch_starts the line of step 4's start. The rows
    written before it stay, and a resume as the line says makes the run's history whole."""
    run = tmp_path / "run"
    folder, path = run / "csv", run / made_read_only
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cli += [f"hydra.run.dir={run}"]
    result = run_cli("train", *cli, *make_read_only(path, 3), preexec_fn=AS_A_USER)
    file = folder / "metrics.csv" if made_read_only == "csv" else path
    assert_one_line_error(
        result,
        f"could not write {file} (Permission denied): make {folder} and its files writable, then "
        f"resume with ckpt_path=last hydra.run.dir={run}; the rows written before it are kept",
    )
    rows = (folder / "metrics.csv").read_text().splitlines()
    assert len(rows) > 4 and not [p.name for p in folder.iterdir() if ".tmp-" in p.name]

    writable(path)  # what the line says to do
    resumed = run_cli("train", *cli, "ckpt_path=last", preexec_fn=AS_A_USER)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = (folder / "metrics.csv").read_text().splitlines()
    kept = next(i for i, row in enumerate(rows) if row.split(",")[1] == "2")  # before step 2
    assert history[:kept] == rows[:kept]  # the rows before the resumed batch, as they were
    assert losses(folder / "metrics.csv") == uninterrupted  # every step's, once


def test_a_run_folder_made_read_only_is_one_line_naming_the_file(
    tmp_path: Path, data_dir: Path
) -> None:
    """The last resort (lmtrain.utils.task), here for metrics.json, written as training ends,
    in a run folder made read-only after step 3 (samples.txt's step 4 block is only a warning:
    samples never end a run)."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"hydra.run.dir={run}")
    result = run_cli("train", *cli, *make_read_only(run, 3), preexec_fn=AS_A_USER)
    assert_one_line_error(
        result,
        f"could not write {run}/metrics.json (Permission denied): make {run} (and the file, if "
        f"it is there) writable, on a file system mounted read-write, then resume with "
        f"ckpt_path=last hydra.run.dir={run}; the files written before it are as they were",
    )
    assert "=== step 2 ===" in (run / "samples.txt").read_text()  # the first validation's block


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM, errno.EROFS])
def test_the_last_resort_names_an_unwritable_file(code: int) -> None:
    """Any other write the modes refuse (a logger's file, samples.txt): one line naming it; an
    error without a file (a read of a socket) stays a traceback."""
    from lmtrain.utils.task import unwritable_error  # added with it

    err = OSError(code, os.strerror(code), "/runs/a/samples.txt")
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = err
    refusal = unwritable_error(wrapped)
    assert refusal is not None
    assert str(refusal).startswith(f"could not write /runs/a/samples.txt ({os.strerror(code)})")
    assert "make /runs/a (and the file, if it is there) writable" in str(refusal)
    assert "then run again" in str(refusal)  # no checkpoint to resume from
    assert unwritable_error(PermissionError(errno.EACCES, "Permission denied")) is None
    assert unwritable_error(OSError(errno.ENOENT, "No such file", "/x")) is None


def test_a_file_under_a_folder_this_process_cannot_enter_is_one_line(tmp_path: Path) -> None:
    """rev_diff13: the last resort's own check of the file raised PermissionError under a
    folder that may not be entered: a second traceback."""
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    (locked / "sub" / "m.ckpt").write_bytes(b"")
    locked.chmod(0)
    try:
        out = run_cli(
            "generate", f"ckpt_path={locked / 'sub' / 'm.ckpt'}",
            f"hydra.run.dir={tmp_path / 'run'}", preexec_fn=AS_A_USER, fresh=True,
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert_one_line_error(out, str(locked / "sub" / "m.ckpt"), "Permission denied")
