"""The NaN guard keeps the checkpoints as they are (red team rev_opt18): `stop` saved the weights
before the NaN's step as last.ckpt, the very weights whose forward gives it again on resume, over
the good one; `skip` skipped every step of a diverged run and exited 0 with an older step's
train/loss; and `nan_guard: off` in a YAML file (read as False) was refused.

Real runs of `python -m lmtrain.train`, diverged by a learning rate of 1e9 as a user's would be.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmtrain.errors import LMTrainError, NonFiniteLossError
from lmtrain.models import nan_guard
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

QUIET = ("logger=none", "callbacks.text_samples=null")
DIVERGE = ("model.optimizer.lr=1e9", "model.scheduler.num_warmup_steps=0")


def saved_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def inject_nan(step: int) -> list[str]:
    return [
        "+callbacks.nan._target_=tests.helpers.faults.InjectNonFinite",
        f"+callbacks.nan.step={step}",
    ]


def test_stop_keeps_last_ckpt_and_resuming_from_it_with_a_lower_lr_finishes(
    tmp_path: Path, data_dir: Path
) -> None:
    """The repro: a run resumed from step 4 with lr=1e9 stops at a NaN; the stop had saved the
    weights of the step before it, and resuming from them with a lower lr stopped again at the
    same step, every time (the lr does not enter their forward)."""
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, f"hydra.run.dir={run}")
    assert run_cli("train", *cli).returncode == 0
    before = last.read_bytes()
    assert saved_step(last) == 4
    more = ["ckpt_path=last", "trainer.max_steps=8", "trainer.val_check_interval=4"]
    out = run_cli("train", *cli, *more, *DIVERGE)
    line = assert_one_line_error(
        out,
        "non-finite loss (nan) at step ",
        "give it at any learning rate, and are not saved",
        f"kept {last} as it was (step 4)",
        "lower model.optimizer.lr",
        "or skip such batches with model.nan_guard=skip",
        f"resume with ckpt_path=last hydra.run.dir={run}",
    )
    assert out.returncode == 1, line
    assert last.read_bytes() == before
    assert sorted(p.name for p in last.parent.iterdir() if p.name.startswith("last")) == [
        "last.ckpt"
    ]
    # The advice works: from step 4 with a lower learning rate, to the end.
    resumed = run_cli("train", *cli, *more, "model.optimizer.lr=1e-4")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 8
    assert saved_step(last) == 8


def test_stop_before_any_save_leaves_no_checkpoint_and_says_start_again(
    tmp_path: Path, data_dir: Path
) -> None:
    """A NaN at step 2, before the first validation's save: the stop wrote step 1's weights as
    the run's only checkpoint; now there is none, and the line says how to start again."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, f"hydra.run.dir={run}")
    out = run_cli("train", *cli, *inject_nan(2))
    assert_one_line_error(
        out,
        "non-finite loss (nan) at step 2: the weights of step 1 give it",
        "no checkpoint was saved yet",
        "then start again (in this run folder: overwrite_run=true)",
    )
    assert not (run / "checkpoints").exists()
    again = run_cli("train", *cli, "overwrite_run=true")
    assert again.returncode == 0, again.stderr[-3000:]


def test_skip_stops_a_diverged_run_after_max_skips_whole_steps_in_a_row(
    tmp_path: Path, data_dir: Path
) -> None:
    """lr=1e9: every loss after step 1 is NaN; `skip` skipped them all and exited 0."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, f"hydra.run.dir={run}", "trainer.max_steps=20")
    skip = ["model.nan_guard=skip", "model.nan_guard_max_skips=3"]
    out = run_cli("train", *cli, *DIVERGE, *skip)
    last = run / "checkpoints" / "last.ckpt"
    assert_one_line_error(
        out,
        "model.nan_guard=skip skipped every micro-batch of 3 optimizer steps in a row, up to "
        "step 4 (model.nan_guard_max_skips=3): the loss diverged",
        f"kept {last} as it was (step 2)",  # the validation's save after step 2
        # Step 2 skipped: its weights are step 1's, which give NaN on every batch (rev_run22).
        "which holds those weights",
        "then start again (in this run folder: overwrite_run=true)",
    )
    assert "nan_guard=skip, then" not in out.stderr  # no skip mode offered: it is in it
    assert out.returncode == 1
    assert saved_step(last) == 2
    assert not (run / "metrics.json").exists()


def test_a_skipped_last_step_logs_nan_train_loss_not_an_older_steps(
    tmp_path: Path, data_dir: Path
) -> None:
    """Steps 2-4 skipped whole (under the limit): metrics.json and the CSV rows held step 1's
    train/loss as the loss of the last step."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    out = run_cli("train", *cli, f"hydra.run.dir={run}", *DIVERGE, "model.nan_guard=skip")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train/nonfinite_skips"] == 3 and metrics["trainer/global_step"] == 4
    assert math.isnan(metrics["train/loss"])
    assert math.isnan(metrics["train/grad_norm"])  # not step 1's
    with open(run / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["train/loss"]]
    for column in ("train/loss", "train/grad_norm"):
        values = {int(row["step"]): float(row[column]) for row in rows}
        assert math.isfinite(values[0]), column
        assert all(math.isnan(values[s]) for s in (1, 2, 3)), (column, values)


def test_nan_guard_off_in_a_yaml_file_is_off(tmp_path: Path, data_dir: Path) -> None:
    """YAML 1.1 reads an unquoted `off` as False: refused as "model.nan_guard=False". Now it is
    "off" (a NaN at step 2 goes unchecked); `on` (True) names no mode and stays refused."""
    experiments = tmp_path / "configs" / "experiment"
    experiments.mkdir(parents=True)
    (experiments / "guard_off.yaml").write_text("# @package _global_\nmodel:\n  nan_guard: off\n")
    (experiments / "guard_on.yaml").write_text("# @package _global_\nmodel:\n  nan_guard: on\n")
    search = f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, search)
    out = run_cli(
        "train", *cli, f"hydra.run.dir={tmp_path / 'off'}", "experiment=guard_off", *inject_nan(2)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "non-finite loss" not in out.stdout + out.stderr
    refused = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'on'}", "experiment=guard_on")
    assert_one_line_error(
        refused,
        "model.nan_guard=True (YAML reads on, yes and true so): use one of ('stop', 'skip', 'off')",
    )


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "3"])
def test_max_skips_must_be_a_whole_number_of_at_least_one(value: object) -> None:
    with pytest.raises(LMTrainError, match=rf"^model\.nan_guard_max_skips={value!r}: pass a whole"):
        nan_guard.check_nan_guard("skip", value)  # type: ignore[arg-type]
    assert nan_guard.check_nan_guard(False, 1) == "off"


def test_a_step_with_one_micro_batch_trained_ends_the_run_of_skipped_steps(
    tmp_path: Path,
) -> None:
    """Under accumulation, a step whose micro-batches were skipped only in part trained: it
    ends the count of whole steps skipped in a row; two whole ones in a row stop (limit 2)."""
    stepping = {"now": False}
    loop = SimpleNamespace(_should_accumulate=lambda: not stepping["now"])
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=loop),
        checkpoint_callback=None,
        default_root_dir=str(tmp_path),
        strategy=None,
        gradient_clip_val=1.0,
    )
    module = SimpleNamespace(global_step=0, trainer=trainer)
    count = nan_guard.SkipCount(limit=2)

    def step(*skipped: bool) -> None:
        for i, skip in enumerate(skipped):
            stepping["now"] = i == len(skipped) - 1
            count.count(module, skip)
        module.global_step += 1

    step(True, True)  # 1 whole
    step(True, False)  # trained on one: the count starts again
    assert count.in_row == 0
    step(False, True)
    step(True, True)  # 1 whole
    assert count.in_row == 1
    with pytest.raises(NonFiniteLossError, match="skipped every micro-batch of 2 optimizer"):
        step(True, True)  # the second in a row stops, at its stepping micro-batch


def test_a_resumed_run_counts_the_steps_skipped_before_its_checkpoint(
    tmp_path: Path, data_dir: Path
) -> None:
    """Stop 49 left the count out of checkpoints: resumed at step 2 after one skipped step, a
    diverged run skipped three more and stopped at step 5, where the uninterrupted run above
    (`..._after_max_skips_whole_steps_in_a_row`) stops at step 4."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, *QUIET, f"hydra.run.dir={run}", *DIVERGE)
    skip = ["model.nan_guard=skip", "model.nan_guard_max_skips=3"]
    first = run_cli("train", *cli, *skip, "trainer.max_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert saved_step(last) == 2
    out = run_cli("train", *cli, *skip, "trainer.max_steps=20", "ckpt_path=last")
    assert_one_line_error(
        out,
        "model.nan_guard=skip skipped every micro-batch of 3 optimizer steps in a row, up to "
        "step 4 (model.nan_guard_max_skips=3): the loss diverged",
    )
    assert out.returncode == 1


def test_a_skip_run_resumed_under_stop_still_clips_and_logs_its_grad_norm(
    tmp_path: Path, data_dir: Path
) -> None:
    """Review of 0af300c: checkpoints held the skipped step's micro-batch counts, which only
    `skip` resets; resumed with `nan_guard=stop` after a step skipped whole, every step was
    taken for a skipped one (no clipping, train/grad_norm NaN)."""
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", "callbacks.text_samples=null")
    cli += [f"hydra.run.dir={run}"]
    first = run_cli("train", *cli, "model.nan_guard=skip", "trainer.max_steps=2", *inject_nan(2))
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["train/nonfinite_skips"] == 1
    out = run_cli("train", *cli, "model.nan_guard=stop", "trainer.max_steps=4", "ckpt_path=last")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trainer/global_step"] == 4
    assert math.isfinite(metrics["train/grad_norm"]) and metrics["train/grad_norm"] > 0
