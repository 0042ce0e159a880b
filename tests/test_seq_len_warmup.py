"""model.seq_len_warmup: the first optimizer steps train on the start of each window, its length
a function of the step alone (so a resumed run cuts as an uninterrupted one: the Muon killed-run
test in tests/test_muon.py runs inside a warm-up)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmtrain.models.seq_len_warmup import SequenceLengthWarmup
from lmtrain.train import train
from tests.helpers.compose import SHRUNK_FAST

RECORD = "+callbacks.record._target_=tests.helpers.metric_probes.RecordWindowLengths"


def test_lengths_grow_linearly_in_multiples_of_8_to_the_whole_window() -> None:
    warmup = SequenceLengthWarmup(start=16, steps=60)
    lengths = [warmup.length_at(step, 64) for step in range(70)]
    assert lengths[0] == 16 and lengths[59] == 56 and lengths[60:] == [64] * 10
    assert lengths == sorted(lengths) and sorted(set(lengths)) == [16, 24, 32, 40, 48, 56, 64]
    for steps in (0, 1, 59, 60, 61, 300):
        expected = sum(warmup.length_at(step, 64) for step in range(steps))
        assert warmup.tokens_through(steps, 64) == expected
    # A start and a window that are not multiples of 8: never below the start nor above the window.
    odd = SequenceLengthWarmup(start=12, steps=10)
    assert [odd.length_at(s, 30) for s in range(12)] == [12] * 3 + [16] * 4 + [24] * 3 + [30] * 2
    windows = torch.arange(2 * 31).reshape(2, 31)
    assert torch.equal(odd.truncate(windows, 3), windows[:, :17])  # 16 inputs, then their target


def test_a_run_trains_on_cut_windows_validates_on_whole_ones_and_counts_them(
    compose_cfg, play: Path, tmp_path: Path
) -> None:
    """experiment=shakespeare_char_fast, shrunk (1 layer, 32 wide, batches of 32 windows of 64),
    its warm-up over 40 of 60 steps: what the module's hooks saw, and the tokens it reports."""
    record = tmp_path / "lengths.json"
    cfg = compose_cfg(
        "experiment=shakespeare_char_fast",
        "model.optimizer.muon.optimizer.lr=0.05",  # tiny matrices want a larger lr (test_muon)
        "model.seq_len_warmup.steps=40",
        f"data.source.path={play}",
        "logger=csv",
        *SHRUNK_FAST,
        "callbacks.early_stopping=null",
        "trainer.val_check_interval=30",
        RECORD,
        f"+callbacks.record.path={record}",
        tiny=False,
    )
    metrics = train(cfg)
    seen = json.loads(record.read_text())
    warmup = SequenceLengthWarmup(start=16, steps=40)
    assert seen["train"] == [[step, warmup.length_at(step, 64)] for step in range(60)]
    assert {length for _, length in seen["val"]} == {64}  # validation reads whole windows
    assert [step for step, _ in seen["val"]][-1] == 60
    assert metrics["tokens_seen"] == 32 * warmup.tokens_through(60, 64) < 32 * 60 * 64
    # It learns: a uniform guess costs ln 50 = 3.91 nats, character frequencies 3.28, AdamW
    # 2.33; this run 1.99, without a warm-up 1.96 (tests/test_muon.py's run).
    assert metrics["val/loss"] < 2.2, metrics
