"""Under DDP, rank 0 alone says what the run does, and its val metrics draw no warning.

Every rank runs the same checks on the same config, so each warning and each of lmtrain's info
lines came once per rank; and Lightning warned on every validation metric that it was one rank's
("It is recommended to use sync_dist=True"), though the module's metrics sync over the ranks.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.slow
def test_a_ddp_run_warns_once_logs_once_and_its_val_metrics_draw_no_warning(
    tmp_path: Path, data_dir: Path
) -> None:
    out = run_cli("train", *tiny_cli(tmp_path, data_dir), "trainer=ddp_cpu", "model.optimizer=null")
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert said.count("model.optimizer is null: training with torch.optim.AdamW") == 1, said
    assert said.count("Preparing data") == 1, said
    assert said.count("Building model") == 1, said
    assert "sync_dist" not in said, said
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val/ppl"] == pytest.approx(2.718281828 ** metrics["val/loss"], rel=1e-6)
