"""`lmtrain.train` end to end: every data source runs, the model learns, a run leaves its files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from lmtrain.train import train
from tests.helpers import run_cli, wandb_summary

METRIC_KEYS = {"train/loss", "val/loss", "val/ppl", "trainer/global_step", "tokens_seen"}


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + "the quick brown fox. " * 300)
    return folder


@pytest.mark.parametrize("source", ["python_stdlib", "text_files", "shakespeare_char"])
def test_fast_dev_run_for_each_data_source(
    source: str, compose_cfg, shakespeare: Path, text_corpus: Path, tmp_path: Path
) -> None:
    path = {"text_files": [f"data.source.path={text_corpus}"]}
    path["shakespeare_char"] = [f"data.source.path={shakespeare}"]
    cfg = compose_cfg(f"data={source}", "debug=fdr", "logger=none", *path.get(source, []))
    metrics = train(cfg)
    assert math.isfinite(metrics["val/loss"])
    assert (tmp_path / "run" / "samples.txt").read_text().strip()


def test_shakespeare_char_learns(compose_cfg, shakespeare: Path) -> None:
    """A short run of the nanoGPT baby recipe gets well below a uniform guess (ln 66 = 4.19)."""
    cfg = compose_cfg(
        "experiment=shakespeare_char",
        f"data.source.path={shakespeare}",
        "logger=none",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "model.config.n_layer=2",
        "model.config.n_embd=64",
        "data.block_size=64",
        "data.batch_size=12",
        "trainer.max_steps=300",
        "trainer.val_check_interval=300",
        tiny=False,
    )
    metrics = train(cfg)
    assert metrics["val/loss"] < 2.6, metrics
    assert metrics["train/loss"] < 2.6, metrics
    assert metrics["trainer/global_step"] == 300


def test_cli_run_leaves_its_files_logs_to_wandb_and_resumes(
    tmp_path: Path, shakespeare: Path
) -> None:
    run_dir = tmp_path / "run"
    common = [
        "data=shakespeare_char",
        f"data.source.path={shakespeare}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}",
        "debug=limit",
        "model.config.n_layer=2",
        "model.config.n_embd=64",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=2",
        "callbacks.throughput.window_size=4",
        "callbacks.throughput.available_flops=1e11",
    ]
    first = run_cli("train", *common)
    assert first.returncode == 0, first.stderr[-3000:]

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert list((run_dir / "checkpoints").glob("best-step=*-val_loss=*.ckpt"))
    assert (run_dir / "samples.txt").read_text().startswith("=== step 10 ===\n\ndef ")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.keys() >= METRIC_KEYS
    assert metrics["trainer/global_step"] == 20
    assert metrics["tokens_seen"] == 20 * 12 * 64

    summary = wandb_summary(run_dir)
    assert summary["state"] == "finished" and summary["exit_code"] == 0
    assert {"train/loss", "val/loss", "tokens_seen"} <= summary["summary"].keys()
    throughput = {"train/device/items_per_sec", "train/device/samples_per_sec", "train/device/mfu"}
    assert throughput <= summary["summary"].keys()
    assert 0 < summary["summary"]["train/device/mfu"] < 1
    assert summary["config"]["data"]["block_size"] == 64
    assert summary["config"]["params/total"] > 0

    # Resume from last.ckpt (step 20) and train on to step 30 in the same run folder.
    second = run_cli("train", *common, "ckpt_path=last", "trainer.max_steps=30")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in second.stdout + second.stderr
    resumed = json.loads((run_dir / "metrics.json").read_text())
    assert resumed["trainer/global_step"] == 30
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 30

    # Evaluating the final checkpoint reproduces the run's final val/loss.
    evaluated = run_cli(
        "eval",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        f"paths.data_dir={tmp_path / 'data'}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    eval_metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert eval_metrics["val/loss"] == pytest.approx(resumed["val/loss"], rel=1e-5)
    assert eval_metrics["val/ppl"] == pytest.approx(math.exp(eval_metrics["val/loss"]), rel=1e-5)
