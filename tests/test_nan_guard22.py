"""The NaN-guard stop names a checkpoint that goes on (red team rev_run22): a save of the weights
whose forward gives the NaN (every step's last.ckpt, or the one after a validation) replaced
the good last.ckpt before it, and the line sent the user back to it: resuming with a lower
learning rate met the same NaN at the same step. A validation of those weights also kept
`best-step=3-val_loss=nan.ckpt` as the best checkpoint.

Real runs of `python -m lmtrain.train`, diverged by model.optimizer.lr=1e4 as the red team's was:
steps 1-3 finite, the weights of step 3 give NaN (in training and validation).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lmtrain.callbacks.checkpoint import StepScheduledCheckpoint
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli

DIVERGE = (
    "model.optimizer.lr=1e4",
    "model.scheduler.num_warmup_steps=1",
    "trainer.gradient_clip_val=null",
)
EVERY_STEP = "callbacks.model_checkpoint.every_n_train_steps=1"


def play_corpus(path: Path) -> Path:
    """About 50 KB of `NAME:` lines of random words, holding the samples' prompts."""
    rng = random.Random(0)
    words = [
        "the",
        "king",
        "queen",
        "love",
        "death",
        "night",
        "day",
        "sword",
        "heart",
        "blood",
        "fair",
        "sweet",
        "good",
        "lord",
    ]
    names = ["ROMEO", "JULIET", "KING HENRY", "FIRST CITIZEN", "MERCUTIO"]
    blocks, size = [], 0
    while size < 50_000:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(5, 15))).capitalize()
        blocks.append(f"{rng.choice(names)}:\n{line}.\n\n")
        size += len(blocks[-1])
    path.write_text("".join(blocks))
    return path


def tiny_run(tmp_path: Path, run: Path, *overrides: str) -> list[str]:
    """The red team's tiny run (20 steps of a 1-layer char model) in `run`."""
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        play_corpus(corpus)
    return [
        "experiment=shakespeare_char",
        "model.config.n_layer=1",
        "model.config.n_embd=32",
        "model.config.n_head=2",
        "data.block_size=32",
        "data.batch_size=8",
        "trainer.max_steps=20",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        f"data.source.path={corpus}",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={run}",
        *overrides,
    ]


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def folder(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_stop_puts_back_the_save_before_the_weights_and_the_advice_finishes(
    tmp_path: Path,
) -> None:
    """The repro: the save of step 3 (every step, and the validation's) replaced step 2's,
    the stop at step 4 said it kept it, and resuming from it with lr=1e-3 stopped at step 4
    again. Now step 2's is back, no `best-*` holds a NaN val/loss, and the advice finishes."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    cli = tiny_run(tmp_path, run, *DIVERGE, EVERY_STEP, "trainer.val_check_interval=3")
    out = run_cli("train", *cli)
    assert_one_line_error(
        out,
        "non-finite loss (nan) at step 4: the weights of step 3 give it at any learning rate, "
        "and are not saved",
        f"put {last} back as it was (step 2)",
        f"resume with ckpt_path=last hydra.run.dir={run}",
    )
    assert out.returncode == 1
    assert saved_step(last) == 2
    assert folder(run) == ["last.ckpt"]  # no best-step=3-val_loss=nan.ckpt, no fallback left

    resumed = run_cli("train", *cli, "ckpt_path=last", "model.optimizer.lr=1e-3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert saved_step(last) == 20
    assert ".last.ckpt.good" not in folder(run)


def test_a_first_save_of_those_weights_is_not_offered_to_resume_at_a_lower_lr(
    tmp_path: Path,
) -> None:
    """No earlier last.ckpt: the validation's save of step 3 is the run's only one. The line
    said to resume from it with a lower learning rate; it now says it holds those weights, and
    starting again with a lower one (its advice) finishes."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    cli = tiny_run(tmp_path, run, *DIVERGE, "trainer.val_check_interval=3")
    out = run_cli("train", *cli)
    line = assert_one_line_error(
        out,
        "non-finite loss (nan) at step 4: the weights of step 3 give it",
        f"kept {last} as it was (step 3), which holds those weights",
        "then start again (in this run folder: overwrite_run=true)",
        f"resume with ckpt_path=last hydra.run.dir={run} model.nan_guard=skip",
    )
    assert "are not saved" not in line
    assert line.count("resume with") == 1  # only in skip mode, past one bad batch
    again = run_cli("train", *cli, "overwrite_run=true", "model.optimizer.lr=1e-3")
    assert again.returncode == 0, again.stderr[-3000:]
    assert saved_step(last) == 20


def test_skip_mode_stop_puts_back_the_save_before_the_skipped_weights(tmp_path: Path) -> None:
    """Steps 4-6 skipped whole from the weights of step 3, saved every step: last.ckpt held
    them (step 5) when the limit stopped the run. Now step 2's is back."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    skip = ("model.nan_guard=skip", "model.nan_guard_max_skips=3")
    cli = tiny_run(tmp_path, run, *DIVERGE, *skip, EVERY_STEP, "trainer.val_check_interval=1000")
    out = run_cli("train", *cli)
    assert_one_line_error(
        out,
        "skipped every micro-batch of 3 optimizer steps in a row, up to step 6",
        f"put {last} back as it was (step 2)",
        f"resume with ckpt_path=last hydra.run.dir={run}",
    )
    assert saved_step(last) == 2
    assert folder(run) == ["last.ckpt"]


@pytest.mark.parametrize("score", [float("nan"), float("inf")])
def test_a_non_finite_score_ranks_no_best_checkpoint(tmp_path: Path, score: float) -> None:
    """Lightning keeps a NaN as the first best (ranked as inf); no best is ranked on one now."""
    callback = StepScheduledCheckpoint(dirpath=tmp_path, monitor="val/loss", save_top_k=1)
    assert not callback.check_monitor_top_k(None, torch.tensor(score))  # type: ignore[arg-type]
    assert callback.check_monitor_top_k(None, torch.tensor(3.5))  # type: ignore[arg-type]
