"""Schedules and damaged-checkpoint advice as red team api23 found them (findings 4, 6, 7, 8):
from Python a Trainer with no end was an OverflowError traceback and a warm-up longer than the
run went unwarned; a WSD schedule whose warm-up and decay outran the run never reached its peak
learning rate, unwarned on the command line too; the advice for a damaged checkpoint named
another tool's Lightning checkpoint beside it, as `ckpt_path=` even to load_from_checkpoint."""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_wsd_schedule

from lmtrain.errors import LMTrainError
from lmtrain.models import CausalLMModule
from lmtrain.models.checkpoint import read_checkpoint_file
from lmtrain.utils.damaged_checkpoint import WRITTEN_BY
from lmtrain.utils.safe_load import CHECKPOINT_KEY
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.test_python_api import data_module, fit_and_save, module, trainer

WARNINGS = "lmtrain.utils.trainer_checks"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return one_file_corpus(tmp_path / "corpus")


def fit_with(tmp_path: Path, corpus: Path, data_dir: Path, scheduler, **settings) -> None:
    datamodule = data_module(corpus, data_dir)
    trainer(tmp_path, **settings).fit(module(datamodule.tokenizer, scheduler=scheduler), datamodule)


def test_a_python_trainer_with_no_end_refuses_a_schedule_in_one_line(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """max_steps=-1 and max_epochs=-1 (max_time ends the run): OverflowError: cannot convert
    float infinity to integer, from configure_optimizers."""
    schedule = functools.partial(get_cosine_schedule_with_warmup, num_warmup_steps=2)
    endless = {"max_steps": -1, "max_epochs": -1, "max_time": "00:00:00:03"}
    with pytest.raises(LMTrainError) as refused:
        fit_with(tmp_path, corpus, data_dir, schedule, **endless)
    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith(
        "Trainer(max_steps=-1, max_epochs=-1) sets no end for the learning-rate schedule"
    )
    assert "pass Trainer(max_steps=<steps>) or Trainer(max_epochs=<epochs>)" in line


def test_a_python_warm_up_not_shorter_than_the_run_is_warned_of_as_on_the_command_line(
    tmp_path: Path, corpus: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = functools.partial(get_cosine_schedule_with_warmup, num_warmup_steps=10)
    with caplog.at_level(logging.WARNING, logger=WARNINGS):
        fit_with(tmp_path, corpus, data_dir, schedule, max_steps=4)
    assert (
        "scheduler.num_warmup_steps=10 is not shorter than the run's 4 steps "
        "(Trainer(max_steps=4)): the learning rate peaks at about 30% of optimizer.lr; "
        "lower the warm-up"
    ) in caplog.text


def test_a_python_wsd_schedule_whose_decay_outruns_the_run_is_warned_of(
    tmp_path: Path, corpus: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    schedule = functools.partial(get_wsd_schedule, num_warmup_steps=2, num_decay_steps=6)
    with caplog.at_level(logging.WARNING, logger=WARNINGS):
        fit_with(tmp_path, corpus, data_dir, schedule, max_steps=4)
    assert (
        "scheduler.num_warmup_steps=2 + num_decay_steps=6 is more than the run's 4 steps "
        "(Trainer(max_steps=4)): get_wsd_schedule gets a stable phase of -4 steps, and the "
        "learning rate never reaches optimizer.lr (the decay is 67% done when the warm-up "
        "ends); lower num_decay_steps to at most 2"
    ) in caplog.text
    caplog.clear()
    fitting = functools.partial(get_wsd_schedule, num_warmup_steps=2, num_decay_steps=2)
    with caplog.at_level(logging.WARNING, logger=WARNINGS):
        fit_with(tmp_path, corpus, data_dir, fitting, max_steps=4)
    assert "get_wsd_schedule" not in caplog.text


def test_a_command_line_wsd_schedule_whose_decay_outruns_the_run_is_warned_of(
    tmp_path: Path, data_dir: Path
) -> None:
    """The red team's command: LR 0, 2e-4, ... 8e-4, then 5e-4 and down, exit 0, no warning."""
    wsd = [
        "model.scheduler._target_=transformers.get_wsd_schedule",
        "~model.scheduler.min_lr_rate",
        "model.scheduler.num_warmup_steps=2",
        "+model.scheduler.num_decay_steps=30",
        "trainer.max_steps=6",
    ]
    done = run_cli("train", *tiny_cli(tmp_path, data_dir, *wsd))
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "model.scheduler.num_warmup_steps=2 + num_decay_steps=30 is more than "
        "trainer.max_steps=6: get_wsd_schedule gets a stable phase of -26 steps, and the "
        "learning rate never reaches model.optimizer.lr"
    ) in done.stderr + done.stdout


def test_a_wsd_schedule_with_stable_steps_that_do_not_add_up_to_the_run_is_named() -> None:
    """With num_stable_steps set, transformers ignores the run's length: the run ends before
    the decay, or trains its last steps at the floor."""
    from lmtrain.utils.schedule_fit import misfits  # new with the fix: imported here, so that
    # the other tests run (and fail) against the code before it

    wsd = {"_target_": "transformers.get_wsd_schedule", "num_warmup_steps": 2}
    longer = {"scheduler": {**wsd, "num_stable_steps": 10, "num_decay_steps": 10}}
    (line,) = misfits(20, "trainer.max_steps=20", longer)
    assert line.startswith(
        "model.scheduler.num_warmup_steps=2 + num_stable_steps=10 + num_decay_steps=10 = 22 "
        "steps, not trainer.max_steps=20"
    )
    assert "the run ends 2 steps before the decay does" in line
    shorter = {"scheduler": {**wsd, "num_stable_steps": 4, "num_decay_steps": 4}}
    (line,) = misfits(20, "trainer.max_steps=20", shorter)
    assert "its last 10 steps train at the floor (min_lr_ratio=0 of lr)" in line
    exact = {"scheduler": {**wsd, "num_stable_steps": 8, "num_decay_steps": 10}}
    assert misfits(20, "trainer.max_steps=20", exact) == []


def test_a_python_part_with_its_own_wsd_schedule_is_named_by_the_module_argument() -> None:
    from lmtrain.utils.schedule_fit import misfits, python_schedules  # new with the fix

    parts = {
        "muon": {"params": "block_matrices", "scheduler": {"num_decay_steps": 30}},
        "adamw": {"params": "rest", "scheduler": None},
    }
    shared = functools.partial(get_wsd_schedule, num_warmup_steps=2, num_decay_steps=4)
    (line,) = misfits(20, "the run's 20 steps", python_schedules(shared, parts), prefix="")
    assert line.startswith("optimizer.muon.scheduler.num_warmup_steps=2 + num_decay_steps=30")
    assert "never reaches optimizer.muon.optimizer.lr" in line


def lightning_checkpoint_of_another_tool(path: Path, weights: dict) -> Path:
    """What another Lightning project saves: weights and hyperparameters, no lmtrain entry."""
    torch.save(
        {"state_dict": weights, "pytorch-lightning_version": "2.5.0", "hyper_parameters": {}},
        path,
    )
    return path


def test_damaged_checkpoint_advice_names_only_an_lmtrain_checkpoint_under_the_callers_key(
    tmp_path: Path, corpus: Path, data_dir: Path
) -> None:
    """A text file given as a checkpoint: the advice named otherpl.ckpt, another tool's
    Lightning checkpoint (newer), as ckpt_path= even to load_from_checkpoint(checkpoint_path=)."""
    saved = fit_and_save(tmp_path, corpus, data_dir, steps=1)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    ours = folder / "mine.ckpt"
    shutil.copyfile(saved, ours)
    weights = torch.load(ours, map_location="cpu", weights_only=True)["state_dict"]
    lightning_checkpoint_of_another_tool(folder / "otherpl.ckpt", weights)
    damaged = folder / "text.ckpt"
    damaged.write_text("hello")
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(damaged)
    assert str(refused.value).endswith(f"pass another checkpoint, e.g. ckpt_path={ours}")
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(damaged)
    assert str(refused.value).endswith(f"pass another checkpoint, e.g. checkpoint_path={ours}")
    last = folder / "last.ckpt"
    shutil.copyfile(damaged, last)
    with pytest.raises(LMTrainError) as refused:
        CausalLMModule.load_from_checkpoint(last)
    assert str(refused.value).endswith(f"go on from mine.ckpt (or load: checkpoint_path={ours})")
    ours.unlink()  # another tool's checkpoint alone: named by no path
    with pytest.raises(LMTrainError) as refused:
        read_checkpoint_file(damaged)
    assert str(refused.value).endswith(WRITTEN_BY)
    from lmtrain.utils.damaged_checkpoint import LMTRAIN_ENTRY  # new with the fix

    assert LMTRAIN_ENTRY == CHECKPOINT_KEY  # the key safe_load reads, which imports this module
