"""Under FSDP the text samples are off (rank 0 generating alone from a sharded model would wait
for the other ranks forever), and the run says so once, at its start: the warning came at each
validation, 9 times in an 8-step run (red team rev_combo30)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.slow
def test_an_fsdp_run_says_once_that_it_writes_no_samples(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    out = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}"),
        "trainer=fsdp_cpu",
        "trainer.max_steps=8",
        "trainer.accumulate_grad_batches=2",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert said.count("UserWarning: text_samples: no samples under FSDP") == 1, said[-3000:]
    assert not (run / "samples.txt").exists()
