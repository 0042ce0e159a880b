"""A `monitor` that stops the run where it is read, refused before any work (red team cb24,
finding 3); `ckpt_path=last` and a replaced run of a run without a checkpoint callback (4); the
`Metrics:` line's small values (5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lmtrain.utils.checks import Problems
from lmtrain.utils.metric_names import SHIPPED_CALLBACKS, check_metric_names, own_callbacks
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

CHECKPOINT = "lmtrain.callbacks.checkpoint.StepScheduledCheckpoint"
# Every validation on a logged step: after batches 4, 8, ..., logged every 2 optimizer steps.
ON_LOGGED_STEPS = {"log_every_n_steps": 2, "val_check_interval": 4, "check_val_every_n_epoch": None}


def problems_of(monitor: str, trainer: dict | None, **extra: dict) -> list[str]:
    problems = Problems()
    callbacks = {"model_checkpoint": {"_target_": CHECKPOINT, "monitor": monitor}, **extra}
    check_metric_names(callbacks, None, problems, ours=True, trainer=trainer)
    return problems.found


def test_a_monitor_missing_at_validation_is_refused_before_any_work(
    tmp_path: Path, data_dir: Path
) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "callbacks.text_samples=null")
    cases = {
        "loss": "'loss' is not a metric lmtrain logs at validation",
        "val/los": "'val/los' is not a metric lmtrain logs: did you mean val/loss?",
        "train/loss": "'train/loss' is logged only every trainer.log_every_n_steps",
    }
    for monitor, fragment in cases.items():
        run = tmp_path / monitor.replace("/", "_")
        out = run_cli(
            "train", *cli, "trainer.log_every_n_steps=3", f"hydra.run.dir={run}",
            f"callbacks.model_checkpoint.monitor={monitor}",
        )  # fmt: skip
        line = assert_one_line_error(out, f"callbacks.model_checkpoint.monitor={fragment}")
        assert "val/loss" in line  # what to monitor instead
        assert not (run / "csv").exists() and not (run / "checkpoints").exists()


def test_a_train_metric_passes_only_where_every_validation_is_a_logged_step() -> None:
    assert problems_of("train/loss", ON_LOGGED_STEPS) == []
    every_2_batches = {**ON_LOGGED_STEPS, "val_check_interval": 2}  # steps 2, 4, ...: logged
    assert problems_of("train/loss", every_2_batches) == []
    # Two batches a step: validations after steps 1, 2, ..., of which every other is logged.
    assert problems_of("train/loss", {**every_2_batches, "accumulate_grad_batches": 2}) != []
    assert problems_of("train/loss", {**ON_LOGGED_STEPS, "val_check_interval": 5}) != []
    assert problems_of("train/loss", {**ON_LOGGED_STEPS, "check_val_every_n_epoch": 1}) != []
    assert problems_of("train/loss", None) != []  # the schedule unknown
    # A Lightning ModelCheckpoint saving every N steps reads it at those steps.
    steps = {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": "train/loss"}
    for every, refused in ((4, False), (3, True)):
        problems = Problems()
        ranked = {"ckpt": {**steps, "every_n_train_steps": every}}
        check_metric_names(ranked, None, problems, ours=True, trainer=ON_LOGGED_STEPS)
        assert bool(problems.found) is refused


def test_a_callback_of_ones_own_or_no_ranking_lets_a_name_through() -> None:
    mine = {"mine": {"_target_": "my_pkg.callbacks.LogsBpc"}}
    assert problems_of("val/bpc", ON_LOGGED_STEPS, **mine) == []  # close to val/bpb: warned
    assert problems_of("my/metric", ON_LOGGED_STEPS, **mine) == []
    assert problems_of("val_loss", ON_LOGGED_STEPS, **mine) != []  # another spelling of ours
    problems = Problems()
    unranked = {"model_checkpoint": {"_target_": CHECKPOINT, "monitor": "loss", "save_top_k": 0}}
    check_metric_names(unranked, None, problems, ours=True, trainer=ON_LOGGED_STEPS)
    assert problems.found == []
    problems = Problems()
    lenient = {"es": {"_target_": "lightning.pytorch.callbacks.EarlyStopping", "monitor": "loss"}}
    lenient["es"]["strict"] = False  # Lightning only warns
    check_metric_names(lenient, None, problems, ours=True, trainer=ON_LOGGED_STEPS)
    assert problems.found == []


def test_a_run_without_a_checkpoint_callback_says_so_on_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "model.optimizer.lr=3e-5")
    plain = [o for o in cli if not o.startswith("callbacks.")]  # callbacks=none has no entries
    run = tmp_path / "run"
    out = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    # (5) the Metrics line keeps small values: 3e-5 in warm-up rounded to 4 places was 0.0.
    logged = re.search(r"Metrics: (\{.*\})", out.stdout + out.stderr)
    assert logged is not None
    saved = json.loads((run / "metrics.json").read_text())
    lr, tokens = saved["train/lr/decay"], saved["tokens_seen"]
    assert 0 < lr < 5e-5 and f"'train/lr/decay': {float(f'{lr:.4g}')}" in logged.group(1)
    assert f"'tokens_seen': {tokens}" in logged.group(1)  # whole, not 5 figures (rev_diff24b)

    # A later run in the folder, with no checkpoint callback, replaced it and saved nothing.
    out = run_cli("train", *plain, "callbacks=none", "overwrite_run=true", f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("train", *cli, "trainer.max_steps=6", "ckpt_path=last", f"hydra.run.dir={run}")
    assert_one_line_error(
        out, "that later run ran without a checkpoint callback", "start a new run"
    )

    fresh = tmp_path / "fresh"
    out = run_cli("train", *plain, "callbacks=none", f"hydra.run.dir={fresh}")
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("train", *plain, "callbacks=none", "ckpt_path=last", f"hydra.run.dir={fresh}")
    assert_one_line_error(
        out,
        f"ckpt_path=last: the run in {fresh} ran without a checkpoint callback (callbacks=none, "
        "or callbacks.model_checkpoint=null), so it saved no checkpoint and cannot be resumed",
        "start a new run",
    )
    out = run_cli("train", *plain, f"resume={fresh}")
    assert_one_line_error(
        out,
        f"resume={fresh}: {fresh} ran without a checkpoint callback (callbacks=none, or "
        "callbacks.model_checkpoint=null)",
        "start a new run without resume=",
    )


def test_lmtrains_shipped_callbacks_log_no_val_metric_and_a_users_under_lmtrain_may() -> None:
    """README.md says to add a callback as src/lmtrain/callbacks/<name>.py: every `lmtrain.`
    class counted as lmtrain's, and a checkpoint monitoring its `val/acc` was refused
    (rev_diff24b). Only the shipped ones are lmtrain's; the list follows the configs."""
    shipped = set()
    groups = ("callbacks", "experiment", "debug")  # where the `callbacks` group is set
    for path in [p for group in groups for p in (ROOT / "configs" / group).rglob("*.yaml")]:
        shipped |= set(
            re.findall(
                r"_target_: (lmtrain\.(?:callbacks|lightning_compat)\.\S+)", path.read_text()
            )
        )
    assert shipped and shipped <= SHIPPED_CALLBACKS, shipped - SHIPPED_CALLBACKS
    callbacks = {target: {"_target_": target} for target in sorted(shipped)}
    assert own_callbacks(callbacks) == []
    callbacks["acc"] = {"_target_": "lmtrain.callbacks.val_acc.ValAcc"}
    assert own_callbacks(callbacks) == ["acc"]
