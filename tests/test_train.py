"""`lmtrain.train` end to end: every data source runs, the model learns, a run leaves its files."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lmtrain.train import train
from tests.helpers.cli import run_cli, wandb_summary
from tests.helpers.compose import SHRUNK_FAST
from tests.helpers.runs import eval_tiny

METRIC_KEYS = {"train/loss", "val/loss", "val/ppl", "trainer/global_step", "tokens_seen"}
STARTUP_PHASES = ("imports", "config", "data", "model", "trainer", "loggers", "first_step")


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):
        (folder / f"doc{i}.txt").write_text(f"Document {i}. " + "the quick brown fox. " * 300)
    return folder


@pytest.mark.parametrize("source", ["python_stdlib", "text_files", "shakespeare_char"])
def test_fast_dev_run_for_each_data_source(
    source: str, compose_cfg, play: Path, text_corpus: Path, tmp_path: Path
) -> None:
    path = {"text_files": [f"data.source.path={text_corpus}"]}
    # BPE trained on 1 MB of the stdlib, the whole 12 MB still tokenized: 11 s instead of 20
    path["python_stdlib"] = ["data.tokenizer.train_sample_mb=1"]
    path["shakespeare_char"] = [f"data.source.path={play}"]
    cfg = compose_cfg(f"data={source}", "debug=fdr", "logger=none", *path.get(source, []))
    metrics = train(cfg)
    assert math.isfinite(metrics["val/loss"])
    assert (tmp_path / "run" / "samples.txt").read_text().strip()


def test_shakespeare_char_learns(compose_cfg, play: Path, caplog) -> None:
    """A short run of the nanoGPT baby recipe learns more than which character follows which:
    on the play, a uniform guess over its 50 tokens costs ln 50 = 3.91 nats, character
    frequencies 3.28, the best bigram model 1.35 (measured on the play itself); this run
    reaches about 0.95."""
    cfg = compose_cfg(
        "experiment=shakespeare_char",
        f"data.source.path={play}",
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
    with caplog.at_level(logging.WARNING, logger="lmtrain.train"):
        metrics = train(cfg)
    # callbacks=none (or one's own config without `defaults: [default]`) has no last.ckpt.
    assert "No checkpoints/last.ckpt after validations: the callbacks config has no " in (
        caplog.text
    )
    # ... nor a preemption save: the line said a SIGTERM's stop still saved one.
    assert "nor can a SIGTERM: there is no PreemptionCheckpoint either" in caplog.text
    assert metrics["val/loss"] < 1.2, metrics
    assert metrics["train/loss"] < 1.2, metrics
    assert metrics["trainer/global_step"] == 300


def test_cli_run_leaves_its_files_logs_to_wandb_and_resumes(tmp_path: Path, play: Path) -> None:
    run_dir = tmp_path / "run"
    common = [
        "data=shakespeare_char",
        f"data.source.path={play}",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={run_dir}",
        "debug=limit",
        "model.config.n_layer=2",
        "model.config.n_embd=64",
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=2",
        "callbacks.throughput.available_flops=1e11",
    ]
    first = run_cli("train", *common, fresh=True)  # its startup clock times the imports
    assert first.returncode == 0, first.stderr[-3000:]

    # Hydra's record of the run: the overrides as typed (hydra.* ones in hydra.yaml), and the
    # config they composed.
    hydra_record = run_dir / ".hydra"
    typed = [o for o in common if not o.startswith("hydra.")]
    assert OmegaConf.load(hydra_record / "overrides.yaml") == typed
    assert OmegaConf.load(hydra_record / "config.yaml").data.source.path == str(play)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 20
    assert list((run_dir / "checkpoints").glob("best-step=*-val_loss=*.ckpt"))
    assert (run_dir / "samples.txt").read_text().startswith("=== step 10 ===\n\ndef ")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics.keys() >= METRIC_KEYS
    assert metrics["trainer/global_step"] == 20
    assert metrics["tokens_seen"] == 20 * 12 * 64
    # The time to the first step, split into phases that add up to it; importing torch and
    # Lightning alone takes more than a tenth of a second.
    phases = {k: v for k, v in metrics.items() if k.startswith("time/startup/")}
    assert phases.keys() == {f"time/startup/{p}_s" for p in STARTUP_PHASES}
    assert sum(phases.values()) == pytest.approx(metrics["time/startup_s"], abs=1e-6)
    assert phases["time/startup/imports_s"] > 0.1 and min(phases.values()) >= 0
    assert "Startup: " in first.stdout + first.stderr

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


def test_early_stop_at_threshold_reports_that_validation(
    compose_cfg, play: Path, data_dir: Path, tmp_path: Path
) -> None:
    """experiment=shakespeare_char_fast's machinery, shrunk: EarlyStopping ends the run at the
    first whole-split validation below the threshold, and metrics.json reports that validation
    (what lmtrain.eval measures on the checkpoint) instead of validating again."""
    cfg = compose_cfg(
        "experiment=shakespeare_char_fast",
        f"data.source.path={play}",
        "logger=none",
        *SHRUNK_FAST,
        "trainer.val_check_interval=15",
        "callbacks.early_stopping.stopping_threshold=3.2",
        tiny=False,
    )
    metrics = train(cfg)
    # Stopped at a validation before max_steps, below the threshold (uniform guess: ln 50 = 3.91;
    # without the stop, val/loss is about 3.64, 2.99, 2.60 and 2.48 at steps 15, 30, 45, 60).
    assert metrics["trainer/global_step"] in (15, 30, 45), metrics
    assert metrics["val/loss"] < 3.2
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == metrics["trainer/global_step"]
    evaluated = eval_tiny(ckpt, tmp_path / "eval", data_dir)
    assert evaluated["val/loss"] == pytest.approx(metrics["val/loss"], rel=1e-5)
