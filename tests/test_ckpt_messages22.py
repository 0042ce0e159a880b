"""What the tools say about checkpoints that are not the one to use (red team rev_after22).

- An unreadable checkpoint's line advised another file beside it that was itself refused: a
  checkpoint with a pickled os.system call in it was named because its zip container was whole.
  The advice names only a checkpoint that weights-only loading accepts.
- An exported intermediate (best) checkpoint's card labelled its val loss "Final val loss", and
  nested parentheses in the value.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from lmtrain.utils.damaged_checkpoint import WRITTEN_BY
from tests.helpers.cli import run_cli, train_csv_run
from tests.helpers.corpora import one_file_corpus

MARKER_NAME = "ran-code"


class RunsCode:
    """Pickles as a call of os.system that leaves a marker file: proof that it was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def logs_in(tmp_path: Path) -> str:
    """The command's run folder under `tmp_path`, not the checkout's logs/."""
    return f"paths.log_dir={tmp_path / 'logs'}"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A 20-step char run, validated at steps 10 and 20, every best checkpoint kept."""
    root = tmp_path_factory.mktemp("ckpt-messages")
    overrides = (
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "callbacks.model_checkpoint.save_top_k=-1",
    )
    return train_csv_run(root, data_dir, one_file_corpus(root / "corpus"), "run", *overrides)


def error_line(out: subprocess.CompletedProcess[str]) -> str:
    """The one line an entry point ends with when it refuses its input (exit 1)."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and lines[-1:] and lines[-1].startswith("error: "), out.stderr
    return lines[-1]


@pytest.mark.parametrize("damaged", ["trunc.ckpt", "raw.ckpt"])
def test_the_advice_for_an_unreadable_checkpoint_never_names_one_that_is_refused(
    run: Path, tmp_path: Path, damaged: str
) -> None:
    last = run / "checkpoints" / "last.ckpt"
    folder = tmp_path / "ckpts"
    folder.mkdir()
    good = folder / "last.ckpt"
    shutil.copyfile(last, good)
    os.utime(good, (1e9, 1e9))  # older than the crafted one, which used to win by time
    marker = tmp_path / MARKER_NAME
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["evil"] = RunsCode(marker)
    crafted = folder / "best-step=99-val_loss=0.1000.ckpt"  # named as lmtrain names its best
    torch.save(checkpoint, crafted)
    data = last.read_bytes()
    (folder / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    (folder / "raw.ckpt").write_bytes(pickle.dumps({"a": 1}))

    line = error_line(run_cli("generate", logs_in(tmp_path), f"ckpt_path={folder / damaged}"))
    assert line.endswith(f"pass another checkpoint, e.g. ckpt_path={good}"), line
    assert str(crafted) not in line
    # The file named is one the tools take: generate runs on it.
    generated = run_cli("generate", logs_in(tmp_path), f"ckpt_path={good}", "max_new_tokens=4")
    assert generated.returncode == 0
    refused = error_line(run_cli("generate", logs_in(tmp_path), f"ckpt_path='{crafted}'"))
    assert "could run code" in refused

    good.unlink()  # only the crafted one is left beside it: the general advice, no file named
    line = error_line(run_cli("generate", logs_in(tmp_path), f"ckpt_path={folder / damaged}"))
    assert line.endswith(WRITTEN_BY) and str(crafted) not in line, line
    assert not marker.exists()  # nothing was unpickled with code in it, advice or load


def test_an_intermediate_checkpoints_card_does_not_call_its_val_loss_final(
    run: Path, tmp_path: Path
) -> None:
    (intermediate,) = (run / "checkpoints").glob("best-step=10-*.ckpt")
    loss = intermediate.stem.rsplit("val_loss=", 1)[1]
    mid = f"out_dir={tmp_path / 'mid'}"
    out = run_cli("export", logs_in(tmp_path), f"ckpt_path='{intermediate}'", mid)
    assert out.returncode == 0, out.stderr[-3000:]
    card = (tmp_path / "mid" / "README.md").read_text()
    assert "Final val" not in card
    row = f"| Val loss | {loss} nats/token (latest validation before this checkpoint; may be"
    assert row in card, card
    (line,) = [r for r in card.splitlines() if r.startswith("| Val loss |")]
    assert line.count("(") == line.count(")") == 1, line  # no parentheses within parentheses

    # The run's own end: the whole-split figure of metrics.json, which is final.
    last = run / "checkpoints" / "last.ckpt"
    out = run_cli("export", logs_in(tmp_path), f"ckpt_path={last}", f"out_dir={tmp_path / 'end'}")
    assert out.returncode == 0, out.stderr[-3000:]
    card = (tmp_path / "end" / "README.md").read_text()
    assert "| Final val loss | " in card and "nats/token (whole val split) |" in card
