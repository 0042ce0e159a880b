"""The NaN guard: a non-finite loss is skipped, or stops the run with the last good checkpoint
kept as it was (the stop saves nothing: tests/test_nan_guard18.py).

Real runs of `python -m lmtrain.train`; `tests.helpers.faults.InjectNonFinite` poisons one batch
through a forward hook on the embeddings, so the model's own loss turns NaN at a chosen step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.killed_runs import (
    assert_same_run,
    finish,
    resumable_corpus,
    start,
    train_command,
)


def inject_nan(step: int, rank: int | None = None) -> list[str]:
    extra = [] if rank is None else [f"+callbacks.nan.rank={rank}"]
    return [
        "+callbacks.nan._target_=tests.helpers.faults.InjectNonFinite",
        f"+callbacks.nan.step={step}",
        *extra,
    ]


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def all_finite(ckpt: dict) -> bool:
    return all(
        torch.isfinite(t).all() for t in ckpt["state_dict"].values() if t.is_floating_point()
    )


def test_skip_drops_the_batch_counts_it_and_finishes(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")
    out = run_cli("train", *cli, f"hydra.run.dir={run}", "model.nan_guard=skip", *inject_nan(2))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Non-finite loss (nan) at step 2: micro-batch skipped (1 so far)" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/nonfinite_skips"] == 1
    assert metrics["trainer/global_step"] == 4  # the skipped step still counts as a step
    ckpt = checkpoint(run)
    assert ckpt["lmtrain"]["nonfinite_skips"] == 1
    assert all_finite(ckpt)


def test_stop_keeps_the_last_checkpoint_and_names_the_step(tmp_path: Path, data_dir: Path) -> None:
    """The stop saved the weights of step 2 as last.ckpt; it keeps the one the validation after
    step 2 wrote (the same step here) and names it."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    cli = [*tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")]
    out = run_cli("train", *cli, f"hydra.run.dir={run}", *inject_nan(3))  # stop: the default
    assert_one_line_error(out, "non-finite loss (nan) at step 3", f"kept {last} as it was (step 2)")
    assert "model.nan_guard=skip" in out.stderr and f"hydra.run.dir={run}" in out.stderr
    assert out.returncode == 1
    ckpt = checkpoint(run)
    assert ckpt["global_step"] == 2
    assert all_finite(ckpt)

    # The fix the message names: resume in skip mode; the same batch is met again and skipped.
    resumed = run_cli(
        "train",
        *cli,
        f"hydra.run.dir={run}",
        "ckpt_path=last",
        "model.nan_guard=skip",
        *inject_nan(3),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4 and metrics["train/nonfinite_skips"] == 1


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_spoilt_weights_stop_the_run_and_keep_the_last_good_checkpoint(
    tmp_path: Path, data_dir: Path, mode: str
) -> None:
    """Weights already NaN (an update that overflowed while the loss was finite): `stop` saved
    them over the last good last.ckpt, and `skip` skipped every later batch, exit 0."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")
    every_step = "callbacks.model_checkpoint.every_n_train_steps=1"
    poisoned = [*inject_nan(3), "+callbacks.nan.weights=true"]
    out = run_cli(
        "train", *cli, f"hydra.run.dir={run}", every_step, f"model.nan_guard={mode}", *poisoned
    )
    assert_one_line_error(
        out,
        "non-finite loss (nan) at step 3 from weights already NaN or inf",
        f"kept {run / 'checkpoints' / 'last.ckpt'} as it was",
        f"ckpt_path=last hydra.run.dir={run}",
    )
    ckpt = checkpoint(run)
    assert ckpt["global_step"] == 2
    assert all_finite(ckpt)
    assert not (run / "metrics.json").exists()


def test_a_checkpoint_of_spoilt_weights_is_never_written(tmp_path: Path, data_dir: Path) -> None:
    """Weights spoilt by step 4's update, whose own loss was finite: the save of step 4 wrote
    them as last.ckpt, and the stop at step 5 sent the user to resume from it, to meet the same
    NaN again (red team rev_diff5, 2026-12-05). Now that save is refused: last.ckpt stays step
    2's, and resuming from it runs to the end."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")
    every_two = ["callbacks.model_checkpoint.every_n_train_steps=2", f"hydra.run.dir={run}"]
    spoil = [
        "+callbacks.spoil._target_=tests.helpers.faults.SpoilWeights",
        "+callbacks.spoil.step=4",
    ]
    out = run_cli("train", *cli, *every_two, *spoil)
    assert_one_line_error(
        out,
        "the weights after step 4 are NaN or inf",
        f"kept {run / 'checkpoints' / 'last.ckpt'} as it was",
    )
    ckpt = checkpoint(run)
    assert ckpt["global_step"] == 2
    assert all_finite(ckpt)
    resumed = run_cli("train", *cli, *every_two, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4


@pytest.mark.slow
@pytest.mark.parametrize(
    ("accumulation", "step", "micro_batch"),
    [
        ("global_batch_size=8", 5, 1),
        ("global_batch_size=4", 5, 0),
        # The first micro-batch after the validation that follows step 8.
        ("global_batch_size=8", 9, 0),
    ],
)
def test_stop_resumes_as_an_uninterrupted_run(
    tmp_path: Path, data_dir: Path, accumulation: str, step: int, micro_batch: int
) -> None:
    """The run resumed from the checkpoint the stop kept (the bad batch cured) ends as a run
    that never met it: every CSV row at its own step, those the stopped run logged after the
    checkpoint replaced. Until rev_opt18 the stop saved the step before it (under accumulation
    with the gradients of the micro-batches before); it saves nothing now. Without dropout."""
    corpus, log = resumable_corpus(tmp_path), tmp_path / "train.out"
    settings = [accumulation, *(f"model.config.{p}_pdrop=0.0" for p in ("resid", "embd", "attn"))]
    reference, run = tmp_path / "reference", tmp_path / "run"
    finish(train_command(corpus, data_dir, reference, *settings), log)
    command = train_command(corpus, data_dir, run, *settings)
    # global_batch_size=8: 2 micro-batches of 4 windows a step (epochs of 9); the chosen
    # micro-batch of `step` turns its loss NaN.
    stopped = start([*command, *inject_nan(step), f"+callbacks.nan.micro_batch={micro_batch}"], log)
    assert stopped.wait(timeout=300) == 1, log.read_text()[-3000:]
    kept = checkpoint(run)["global_step"]
    assert kept < step and f"as it was (step {kept})" in log.read_text()
    finish([*command, "ckpt_path=last"], log)
    assert_same_run(run, reference)


def test_stop_under_fsdp_offers_no_skip_and_keeps_the_sharded_checkpoint(
    tmp_path: Path, data_dir: Path
) -> None:
    """trainer=fsdp refuses nan_guard=skip, yet the stop's line offered it; and each rank
    logged Lightning's "`weights_only` was not set" for the save the stop made then."""
    run = tmp_path / "run"
    cli = [*tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")]
    fsdp = ["trainer=fsdp_cpu", "trainer.devices=1"]
    out = run_cli("train", *cli, *fsdp, f"hydra.run.dir={run}", *inject_nan(3))
    last = run / "checkpoints" / "last.ckpt"
    line = assert_one_line_error(
        out, "non-finite loss (nan) at step 3", f"kept {last} as it was (step 2)"
    )
    assert "nan_guard=skip" not in line
    assert "weights_only" not in out.stdout + out.stderr
    meta = run / "checkpoints" / "last.ckpt" / "meta.pt"
    assert torch.load(meta, map_location="cpu", weights_only=True)["global_step"] == 2


def ddp_run_with_nan_on_rank_1(run: Path, tmp_path: Path, data_dir: Path, *overrides: str):
    """A 2-process DDP run whose rank 1 alone meets a NaN loss at step 2."""
    return run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null"),
        "trainer=ddp_cpu",
        f"hydra.run.dir={run}",
        *overrides,
        *inject_nan(2, rank=1),
        timeout=180,  # a rank left alone in a collective would hang here
    )


@pytest.mark.slow
def test_ddp_nan_on_one_rank_stops_both_at_the_same_step(tmp_path: Path, data_dir: Path) -> None:
    """Before the first save (the validation after step 2): the stop saved step 1's weights,
    from every rank; now no rank writes one."""
    run = tmp_path / "run"
    out = ddp_run_with_nan_on_rank_1(run, tmp_path, data_dir)
    assert_one_line_error(
        out,
        "non-finite loss (nan or inf on another rank) at step 2",
        "no checkpoint was saved yet",
    )
    assert out.returncode == 1
    assert not (run / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_nan_on_one_rank_is_skipped_by_both(tmp_path: Path, data_dir: Path) -> None:
    """Lightning refuses a None training_step under DDP: both ranks skip with zero gradients."""
    run = tmp_path / "run"
    out = ddp_run_with_nan_on_rank_1(run, tmp_path, data_dir, "model.nan_guard=skip")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "at step 2: micro-batch skipped (1 so far)" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/nonfinite_skips"] == 1 and metrics["trainer/global_step"] == 4
    assert all_finite(checkpoint(run))


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(LMTrainError, match=r"model\.nan_guard='never'"):
        CausalLMModule(config={"n_layer": 1, "n_head": 1, "n_embd": 8}, nan_guard="never")


def test_a_sweep_jobs_hint_resumes_it_with_its_own_settings(compose_cfg, tmp_path: Path) -> None:
    """A sweep job stopped by the guard was told `ckpt_path=last hydra.run.dir=<job>`: typed with
    the sweep's command line, that lacks the job's swept settings and was refused."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from lmtrain.utils.resume_hints import resume_hint

    cfg, run = compose_cfg(), tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert resume_hint(last) == f"resume with ckpt_path=last hydra.run.dir={run}"
    OmegaConf.set_readonly(cfg.hydra, False)
    cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    try:
        assert resume_hint(last) == f"resume with resume={run}"
        # A run started by resume= (a sweep job resumed on its own) is no multirun.
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.mode = RunMode.RUN
        cfg.hydra.overrides.task = [f"resume={run}", "model.optimizer.lr=0.001"]
        HydraConfig().set_config(cfg)
        assert resume_hint(last) == f"resume with resume={run}"
    finally:  # later tests of this process compose as plain single runs
        OmegaConf.set_readonly(cfg.hydra, False)
        cfg.hydra.mode, cfg.hydra.overrides.task = RunMode.RUN, []
        HydraConfig().set_config(cfg)
