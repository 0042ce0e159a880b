"""`lmtrain.eval` on several processes reports the whole val split, once, as one process does.

Red team: under `trainer=ddp_cpu` each rank printed its own share's val/tokens, val/bytes and
val/bpb and wrote them to metrics.json (the last writer won); under `trainer=fsdp_cpu` the rank
with padding windows crashed decoding them, and the command still exited 0. Eval with windows
longer than a from-scratch model's trained ones scored untrained positions without a word.
"""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest

from lmtrain.data.datamodule import TextDataModule
from tests.helpers.cli import run_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import eval_tiny, train_tiny

# A short run of the tiny GPT-2 (64 positions) on 32-token windows, with its BPE: the val split
# holds fewer tokens than bytes, and each rank's share its own tokens per byte.
SHORT_RUN = ["trainer.max_steps=2", "trainer.val_check_interval=2", "callbacks.text_samples=null"]
# 29 windows of the val split's 911 tokens, shared 15 and 14 by two ranks.
ODD_WINDOWS = "+data.block_size=31"
METRICS = ("val/loss", "val/ppl", "val/bpb", "val/tokens", "val/bytes")
PAST = (
    "the val windows run past the 32-token windows this model was trained on from scratch "
    "(its run's data.block_size=32)"
)


class RankOneFailsAfterValidation(TextDataModule):
    """Fails on rank 1 as its validation ends, after the last collective of `validate`: as a
    rank's own failure after it would (its lm-eval tasks out of memory)."""

    def teardown(self, stage: str) -> None:
        super().teardown(stage)
        if stage == "validate" and self.trainer is not None and self.trainer.global_rank == 1:
            raise RuntimeError("rank 1 fails after validation")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-ranks")
    corpus = one_file_corpus(root / "corpus", seed=0)
    return {"ckpt": train_tiny(root / "run", data_dir, corpus, *SHORT_RUN), "corpus": corpus}


def eval_cli(ckpt: Path, run: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(
        "eval",
        f"ckpt_path={ckpt}",
        f"hydra.run.dir={run}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={run.parent / 'logs'}",
        "trainer.enable_progress_bar=false",
        *overrides,
    )


@pytest.mark.parametrize("trainer", ["ddp_cpu", "fsdp_cpu"])
def test_ranks_report_the_whole_split_once_as_one_process_does(
    trainer: str, model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    one = eval_tiny(model["ckpt"], tmp_path / "one", data_dir, ODD_WINDOWS)
    assert one["val/tokens"] != one["val/bytes"]  # tokens per byte matter to bpb
    assert one["val/tokens"] // 31 % 2 == 1  # uneven shares: FSDP pads rank 1 with a window
    result = eval_cli(
        model["ckpt"], tmp_path / trainer, data_dir, f"trainer={trainer}", ODD_WINDOWS
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    # One result line, by rank 0: `<ckpt_path>: {'val/loss': ...}`.
    lines = [line for line in output.splitlines() if f"{model['ckpt']}: {{'val/loss'" in line]
    assert len(lines) == 1, output[-3000:]
    written = json.loads((tmp_path / trainer / "metrics.json").read_text())
    for key in METRICS:
        assert written[key] == pytest.approx(one[key], rel=1e-5), key
    assert written["val/tokens"] == one["val/tokens"]
    assert written["val/bytes"] == one["val/bytes"]


def test_a_rank_that_fails_after_validation_fails_the_command(
    model: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    failing = f"data._target_={__name__}.{RankOneFailsAfterValidation.__name__}"
    data = ["data=text_files", f"data.source.path={model['corpus']}", "data.block_size=32"]
    run = tmp_path / "ddp"
    result = eval_cli(model["ckpt"], run, data_dir, "trainer=ddp_cpu", *data, failing)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "rank 1 fails after validation" in output, output[-3000:]
    assert not (run / "metrics.json").exists()


def test_windows_past_the_trained_ones_are_warned_of_once(
    model: dict[str, Path], tmp_path: Path, data_dir: Path, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="lmtrain.models.eval_split"):
        eval_tiny(model["ckpt"], tmp_path / "trained", data_dir)  # its own 32-token windows
    assert PAST not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lmtrain.models.eval_split"):
        eval_tiny(model["ckpt"], tmp_path / "longer", data_dir, "+data.block_size=48")
    warnings = [r.getMessage() for r in caplog.records if PAST in r.getMessage()]
    assert warnings == [
        f"data.block_size=48: {PAST}; it never saw a position past them, so val/loss, val/ppl "
        "and val/bpb score positions it never learned: evaluate with +data.block_size=32 or less"
    ]
    caplog.clear()
    other = ["data=text_files", f"data.source.path={model['corpus']}", "data.block_size=48"]
    with caplog.at_level(logging.WARNING, logger="lmtrain.models.eval_split"):
        eval_tiny(model["ckpt"], tmp_path / "other", data_dir, *other)
    assert "evaluate with data.block_size=32 or less" in caplog.text
