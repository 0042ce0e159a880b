"""A checkpoint `filename` that would put checkpoints in subfolders is refused before the run.

With `auto_insert_metric_name=true` (Lightning's default) Lightning writes `name=` before each
field's value, so `{epoch}-{step}-{val/loss:.3f}` saved `checkpoints/epoch=1-step=28-val/
loss=3.839.ckpt`: a subfolder per checkpoint, which resume does not search (`resume=<run>` said
the run had no checkpoint, `ckpt_path=last` that no run saved one there), and an empty folder
left behind by each replaced best. The refusal names the setting that avoids it; that setting
trains, and its checkpoints resume.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtrain.utils.callback_checks import check_callbacks
from lmtrain.utils.checks import Problems
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

CHECKPOINT = "lmtrain.callbacks.checkpoint.StepScheduledCheckpoint"
SLASHED = "{epoch}-{step}-{val/loss:.3f}"
KEEP_BEST_ONLY = [
    f"callbacks.model_checkpoint.filename='{SLASHED}'",
    "callbacks.model_checkpoint.save_last=false",
    "callbacks.model_checkpoint.save_top_k=2",
]


def problems_of(**entry: object) -> list[str]:
    problems = Problems()
    check_callbacks({"model_checkpoint": {"_target_": CHECKPOINT, **entry}}, problems)
    return problems.found


def test_a_metric_name_with_a_slash_inserted_into_the_filename_is_refused_before_training(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    overrides = [*KEEP_BEST_ONLY, "callbacks.model_checkpoint.auto_insert_metric_name=true"]
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", *overrides))
    assert_one_line_error(
        out,
        f"callbacks.model_checkpoint.filename='{SLASHED}'",
        "'val/loss='",
        "subfolder",
        "callbacks.model_checkpoint.auto_insert_metric_name=false",
    )
    assert not (run / "checkpoints").exists()


def test_only_inserted_names_with_a_slash_are_refused() -> None:
    # Lightning inserts names unless told not to: the key left out is its default, true.
    assert problems_of(filename="best-{val/loss:.4f}")
    assert problems_of(filename="{tokens_seen}-{val/loss}", auto_insert_metric_name=True)
    assert not problems_of(filename=SLASHED, auto_insert_metric_name=False)
    assert not problems_of(filename="{epoch}-{step}", auto_insert_metric_name=True)
    assert not problems_of(filename=None)  # Lightning's default name, {epoch}-{step}


def test_the_advised_setting_saves_in_the_folder_and_resumes(
    tmp_path: Path, data_dir: Path
) -> None:
    run = tmp_path / "run"
    overrides = [*KEEP_BEST_ONLY, "callbacks.model_checkpoint.auto_insert_metric_name=false"]
    first = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", *overrides))
    assert first.returncode == 0, first.stderr[-3000:]
    saved = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(saved) == 2 and all(name.endswith(".ckpt") for name in saved), saved
    (newest,) = (run / "checkpoints").glob("0-4-*.ckpt")  # step 4: the first run's last save
    resumed = run_cli(
        "train", *tiny_cli(tmp_path, data_dir, f"resume={run}", "trainer.max_steps=6", *overrides)
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Restored all states from the checkpoint at {newest}" in resumed.stdout + resumed.stderr
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 6
