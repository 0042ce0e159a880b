"""`train/grad_norm` and `train/clipped`: what the loggers get is the global gradient norm before
clipping, measured independently on the gradients of that very step, in real training runs."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from lmtrain.train import train
from tests.helpers.compose import TINY, compose
from tests.helpers.corpora import one_file_corpus
from tests.helpers.metric_probes import clip_sharded_on_rank, on_two_gloo_ranks

STEPS = 6
# A char-level tiny run of STEPS steps with the CSV logger, no validation until the final one.
RUN = [
    "data=text_files",
    "data.tokenizer.kind=char",
    "data.batch_size=4",
    "logger=csv",
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=100",
    "callbacks.text_samples=null",
]


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of `key` in the CSV logger's metrics.csv, in step order."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row.get(key)]
    return [float(row[key]) for row in sorted(rows, key=lambda row: int(row["step"]))]


def run(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, *overrides: str
) -> tuple[list[float], Path]:
    """Train STEPS steps on a small corpus with the CSV logger; the norms RecordGradNorms saw."""
    corpus = one_file_corpus(tmp_path / "corpus")
    norms_file = tmp_path / "norms.json"
    cfg = compose_cfg(
        *RUN,
        f"data.source.path={corpus}",
        "+callbacks.record._target_=tests.helpers.metric_probes.RecordGradNorms",
        f"+callbacks.record.path={norms_file}",
        *overrides,
    )
    train(cfg)
    return json.loads(norms_file.read_text()), tmp_path / "run"


@pytest.mark.parametrize("accumulate", [1, 2])
def test_logged_norm_is_the_norm_of_the_gradients_before_clipping(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, accumulate: int
) -> None:
    """Clipping at 2.0 bites on some steps and not others; every step is logged. With
    gradient accumulation the norm is that of the summed gradients, once per optimizer step."""
    clip = 2.0
    norms, run_dir = run(
        compose_cfg,
        tmp_path,
        f"trainer.gradient_clip_val={clip}",
        f"trainer.accumulate_grad_batches={accumulate}",
    )
    assert len(norms) == STEPS
    assert logged(run_dir, "train/grad_norm") == pytest.approx(norms, rel=1e-6)
    clipped = [float(norm + 1e-6 > clip) for norm in norms]
    assert 0 < sum(clipped) < STEPS, f"the clip should bite on some steps only: {norms}"
    assert logged(run_dir, "train/clipped") == clipped


def test_clipped_is_the_share_of_steps_clipped_since_the_previous_log(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    clip = 2.0
    norms, run_dir = run(
        compose_cfg, tmp_path, f"trainer.gradient_clip_val={clip}", "trainer.log_every_n_steps=3"
    )
    clipped = [float(norm + 1e-6 > clip) for norm in norms]
    # Logged after steps 3 and 6: the norm of that step, the share of the three steps clipped.
    assert logged(run_dir, "train/grad_norm") == pytest.approx([norms[2], norms[5]], rel=1e-6)
    assert logged(run_dir, "train/clipped") == pytest.approx(
        [sum(clipped[:3]) / 3, sum(clipped[3:]) / 3]
    )


@pytest.mark.parametrize(
    "clipping",
    [
        ["trainer.gradient_clip_val=null"],
        ["trainer.gradient_clip_val=0"],
        ["trainer.gradient_clip_val=0.01", "+trainer.gradient_clip_algorithm=value"],
    ],
    ids=["null", "0", "by_value"],
)
def test_without_clipping_by_norm_the_norm_before_is_logged_and_no_share_clipped(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, clipping: list[str]
) -> None:
    """No clipping: the norm is measured (on logged steps only). Clipping by value: Lightning
    clips, the norm logged is the one before."""
    norms, run_dir = run(compose_cfg, tmp_path, *clipping)
    assert logged(run_dir, "train/grad_norm") == pytest.approx(norms, rel=1e-6)
    assert max(norms) > 2.0  # clipping by norm at 2.0 (the tests above) would clip some
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "train/clipped" not in header
    assert not [key for key in header if key.startswith("memory/")]  # CPU: no memory figures


def test_norm_of_fsdp2_sharded_gradients_is_the_global_norm_and_clips_every_shard() -> None:
    """FSDP2 (fully_shard on two gloo ranks): the norm clipping uses and logs is the norm of the
    whole gradients on every rank, a plain tensor, and every shard is scaled by it."""
    values = on_two_gloo_ranks(clip_sharded_on_rank)
    for norm, expected, is_dtensor, error in values.values():
        assert norm == pytest.approx(expected, rel=1e-6)
        assert not is_dtensor
        assert error < 1e-6


def test_a_run_resumed_between_logs_logs_the_share_an_uninterrupted_one_does(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path, data_dir: Path
) -> None:
    """The counts of the steps since the previous log go into checkpoints: resumed from step 4
    (logs after steps 3 and 6), the share logged after step 6 is that of steps 4 to 6."""
    every_step = [
        "trainer.gradient_clip_val=2.0",
        "trainer.log_every_n_steps=3",
        "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.steps.dirpath=${paths.output_dir}/checkpoints",
        "+callbacks.steps.filename='step={step}'",
        "+callbacks.steps.auto_insert_metric_name=false",
        "+callbacks.steps.every_n_train_steps=1",
        "+callbacks.steps.save_top_k=-1",
    ]
    norms, run_dir = run(compose_cfg, tmp_path, *every_step)
    step4 = run_dir / "checkpoints" / "step=4.ckpt"
    saved = torch.load(step4, map_location="cpu", weights_only=True)["lmtrain"]["clipped_steps"]
    assert saved == {"clipped": float(norms[3] + 1e-6 > 2.0), "steps": 1}

    resumed = tmp_path / "resumed"
    corpus = f"data.source.path={tmp_path / 'corpus' / 'corpus.txt'}"
    train(
        compose(
            "train", resumed, data_dir, *TINY, *RUN, corpus, *every_step, f"ckpt_path='{step4}'"
        )
    )
    assert logged(resumed, "train/clipped") == logged(run_dir, "train/clipped")[-1:]
