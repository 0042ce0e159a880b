"""Every `experiment=` and every `trainer=` config runs: a real `train(cfg)` under `debug=fdr`
(Lightning's fast_dev_run: one train and one val batch), so a config that composes but cannot
train (a wrong `_target_`, a key its class refuses, a context shorter than the windows) fails here.

The options are discovered from configs/experiment and configs/trainer, so a new config is covered
without touching this file. Each run keeps its config as it is, except what a test machine needs:
a small corpus the test writes (for sources that read a path), smaller windows, a tiny saved model
instead of hub weights. GPU trainers are skipped without the GPUs they ask for; multi-process ones
run as the CLI, since Lightning's launcher re-runs the command for the other ranks.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from lmtrain.models.seq_len_warmup import SequenceLengthWarmup
from lmtrain.train import train
from tests.helpers.cli import run_cli
from tests.helpers.corpora import WORDS
from tests.helpers.pretrained import save_tiny_pretrained

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# What every run gets: smaller windows (cheaper, and within a tiny model's 64-token context) and
# no progress bar in the test log. Everything else is the config's own.
SMALL = [
    "data.block_size=32",
    "data.batch_size=4",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
]


def options(group: str) -> list[str]:
    """The user choices of a config group (a `_base` file is shared keys, not a choice)."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if not p.stem.startswith("_"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A play in one text file (~20 KB): speakers' names (the Shakespeare prompts) and lines of
    a small word list, so every character a config's sample prompts use is in a char vocabulary."""
    rng = random.Random(0)
    speeches = [
        f"{rng.choice(['ROMEO', 'JULIET'])}:\n"
        + " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))).capitalize()
        + ", def class.\n"
        for _ in range(300)
    ]
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text("\n".join(speeches))
    return path


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A tiny random GPT-2 and its byte-level BPE, as `save_pretrained` writes them: what a hub
    id such as `gpt2` would load, small enough for a test and found without a network."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    return save_tiny_pretrained(folder, [corpus.read_text()], n_layer=1, vocab_size=300)


def offline_overrides(compose_cfg, choice: str, corpus: Path, pretrained: Path) -> list[str]:
    """What `choice` needs to run here: the test corpus for a source that reads a path (or would
    download one), and the tiny saved model for hub weights."""
    cfg = compose_cfg(choice, tiny=False)
    overrides = []
    if "path" in list(cfg.data.source):  # `in` alone skips a required (`???`) path
        overrides.append(f"data.source.path={corpus}")
    if OmegaConf.select(cfg, "model.pretrained", throw_on_missing=False):
        overrides.append(f"model.pretrained={pretrained}")
    return overrides


def skip_without_gpus(trainer: DictConfig) -> None:
    """A GPU trainer runs where there are GPUs enough for its `devices`; elsewhere it is skipped."""
    if trainer.accelerator != "gpu":
        return
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    devices = trainer.devices if isinstance(trainer.devices, int) else 1
    if torch.cuda.device_count() < devices:
        pytest.skip(f"needs {devices} GPUs")


def check_fast_dev_run(metrics: dict[str, float], processes: int = 1, window: int = 32) -> None:
    assert metrics["trainer/global_step"] == 1  # fast_dev_run: one optimizer step
    # One batch of SMALL's windows each (fewer tokens under a sequence-length warm-up).
    assert metrics["tokens_seen"] == processes * 4 * window
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/loss"])


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_trains(
    experiment: str, compose_cfg, corpus: Path, pretrained: Path, tmp_path: Path
) -> None:
    choice = f"experiment={experiment}"
    offline = offline_overrides(compose_cfg, choice, corpus, pretrained)
    cfg = compose_cfg(choice, "debug=fdr", *SMALL, *offline, tiny=False)
    warmup = cfg.model.get("seq_len_warmup")
    window = SequenceLengthWarmup(**warmup).length_at(0, cfg.data.block_size) if warmup else 32
    check_fast_dev_run(train(cfg), window=window)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["trainer/global_step"] == 1
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))  # a debug run: none written


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_trains(
    trainer: str, compose_cfg, corpus: Path, data_dir: Path, tmp_path: Path
) -> None:
    choice = f"trainer={trainer}"
    composed = compose_cfg(choice, tiny=False).trainer
    skip_without_gpus(composed)
    # The default corpus (the stdlib, ~12 MB to tokenize) swapped for the test's, with a char
    # vocabulary and the default GPT-2 at a test's size.
    tiny = [
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        "model.config.n_layer=2",
        "model.config.n_head=2",
        "model.config.n_embd=32",
        *SMALL,
    ]
    if composed.devices == 1 and composed.get("num_nodes", 1) == 1:
        check_fast_dev_run(train(compose_cfg(choice, "debug=fdr", *tiny, tiny=False)))
        return
    # Several processes: Lightning's launcher re-runs the command line for the other ranks.
    run_dir = tmp_path / "run"
    out = run_cli(
        "train",
        choice,
        "debug=fdr",
        *tiny,
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={run_dir}",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    processes = composed.devices * composed.get("num_nodes", 1)
    check_fast_dev_run(json.loads((run_dir / "metrics.json").read_text()), processes)
