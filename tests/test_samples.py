"""The text_samples callback: a block per validation in samples.txt and a `samples` W&B table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmtrain.train import train
from tests.checkpoints import TINY_GPT2, compose_config, write_corpus
from tests.helpers import wandb_summary

PROMPTS = "samples.prompts=['The cat','A dog']"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("samples") / "corpus")


def train_run(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "train",
        run_dir,
        data_dir,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.kind=char",
        "data.block_size=32",
        "data.batch_size=4",
        *TINY_GPT2,
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
        "callbacks.rich_progress_bar=null",
        PROMPTS,
        "samples.max_new_tokens=12",
        *overrides,
    )
    return train(cfg)


def blocks(path: Path) -> list[tuple[int, list[str]]]:
    """samples.txt as (step, [sample, ...]) per validation."""
    parts = re.split(r"^=== step (\d+) ===\n\n", path.read_text(), flags=re.M)[1:]
    steps, texts = parts[0::2], parts[1::2]
    return [
        (int(s), t.rstrip("\n").split("\n\n---\n\n")) for s, t in zip(steps, texts, strict=True)
    ]


def test_samples_go_to_file_and_wandb_table(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    train_run(run_dir, data_dir, corpus, "logger=wandb")

    # Validations at steps 2 and 4, then the final whole-split validation (still step 4).
    found = blocks(run_dir / "samples.txt")
    assert [step for step, _ in found] == [2, 4, 4]
    for _, samples in found:
        assert len(samples) == 2
        assert samples[0].startswith("The cat") and samples[1].startswith("A dog")

    summary = wandb_summary(run_dir)
    table = summary["summary"]["samples"]
    assert table["_type"] == "table-file" and table["ncols"] == 3 and table["nrows"] == 6
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    logged = json.loads((run / "files" / table["path"]).read_text())
    assert logged["columns"] == ["step", "prompt", "completion"]
    assert [row[0] for row in logged["data"]] == [2, 2, 4, 4, 4, 4]
    assert [row[1] for row in logged["data"]] == ["The cat", "A dog"] * 3
    last = found[-1][1]
    assert [(row[1] + row[2]).rstrip("\n") for row in logged["data"][-2:]] == last
    assert all(len(row[2]) > 0 for row in logged["data"])


def test_every_n_val_and_final_validation(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    """every_n_val=2 samples the 1st and 3rd validation; the final one always samples."""
    run_dir = tmp_path / "run"
    train_run(
        run_dir, data_dir, corpus, "logger=none", "trainer.max_steps=6", "samples.every_n_val=2"
    )
    assert [step for step, _ in blocks(run_dir / "samples.txt")] == [2, 6, 6]


def test_sampling_leaves_training_unchanged(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    """Sampling draws from a forked RNG: with dropout on, the run trains exactly the same."""
    dropout = ["model.config.resid_pdrop=0.1", "model.config.attn_pdrop=0.1", "logger=none"]
    with_samples = train_run(tmp_path / "with", data_dir, corpus, *dropout)
    without = train_run(
        tmp_path / "without", data_dir, corpus, *dropout, "callbacks.text_samples=null"
    )
    assert not (tmp_path / "without" / "samples.txt").exists()
    assert (tmp_path / "with" / "samples.txt").is_file()
    for key in ("train/loss", "val/loss"):
        assert with_samples[key] == without[key], key
