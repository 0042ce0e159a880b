"""A resumed run trains with its own config's optimizer settings (models/resumed_optimizer.py).

Real runs of `python -m lmtrain.train`: a run of 8 steps, resumed to 12 with another learning
rate and weight decay, must log the learning rates a fresh 12-step run with those settings logs
from step 8 on, and save its weight decay; resumed with its own config, it changes nothing.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from lmtrain.models.resumed_optimizer import same
from tests.helpers.cli import run_cli, tiny_cli

SHORT = ["trainer.max_steps=8", "model.scheduler.num_warmup_steps=2", "logger=csv"]
CHANGED = ["trainer.max_steps=12", "model.optimizer.lr=1e-4", "model.optimizer.weight_decay=0.3"]
WARNING = "Resumed at step 8 with optimizer or schedule settings other than the checkpoint's"


def train(tmp_path: Path, data_dir: Path, run: Path, *overrides: str) -> str:
    cli = tiny_cli(tmp_path, data_dir, "callbacks.text_samples=null", *SHORT, *overrides)
    out = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr + out.stdout


def rates(run: Path) -> dict[int, str]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return {
            int(r["step"]): r["train/lr/decay"] for r in csv.DictReader(f) if r["train/lr/decay"]
        }


def test_resume_applies_a_new_lr_weight_decay_and_schedule_length(
    tmp_path: Path, data_dir: Path
) -> None:
    fresh, run = tmp_path / "fresh", tmp_path / "run"
    train(tmp_path, data_dir, fresh, *CHANGED)
    assert WARNING not in train(tmp_path, data_dir, run)
    output = train(tmp_path, data_dir, run, *CHANGED, "ckpt_path=last")
    assert WARNING in output and "decay: weight_decay 0.1 -> 0.3, lr 0.001 -> 0.0001" in output
    resumed, expected = rates(run), rates(fresh)
    assert {s: resumed[s] for s in range(8, 12)} == {s: expected[s] for s in range(8, 12)}
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    groups = ckpt["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.3, 0.0]
    assert ckpt["lr_schedulers"][0]["base_lrs"] == [1e-4, 1e-4]


def test_a_schedule_turned_on_at_resume_starts_at_the_runs_step(
    tmp_path: Path, data_dir: Path
) -> None:
    """A run without a schedule (model.scheduler=null), resumed with `model/scheduler=cosine`:
    the cosine applies (resume= used to skip the run's own option) from step 8 of its 12, as in
    a run that had it from the start, not from its own step 0 (a second warm-up). The rates of
    the whole run are in the same columns (without a schedule they were `lr-AdamW/<group>`)."""
    fresh, run = tmp_path / "fresh", tmp_path / "run"
    train(tmp_path, data_dir, fresh, "trainer.max_steps=12")
    train(tmp_path, data_dir, run, "model.scheduler=null")
    on = ["model/scheduler=cosine", "model.scheduler.num_warmup_steps=2", "trainer.max_steps=12"]
    out = run_cli("train", f"resume={run}", *on)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "decay: this step's rate 0.001 -> " in out.stderr + out.stdout
    resumed, expected = rates(run), rates(fresh)
    assert {s: resumed[s] for s in range(8, 12)} == {s: expected[s] for s in range(8, 12)}
    assert {float(resumed[s]) for s in range(8)} == {1e-3}  # constant before the resume
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "lr-" not in header


def test_a_list_and_a_tuple_of_the_same_betas_are_the_same_setting() -> None:
    """Resumed under fsdp_cpu, a one-file checkpoint's betas (a list) against the FSDP run's
    (a tuple) gave a false 'settings changed' warning: betas [0.9, 0.99] -> (0.9, 0.99)."""
    assert same([0.9, 0.99], (0.9, 0.99))
    assert same((0.9, torch.tensor(0.99)), [0.9, 0.99])
    assert not same([0.9, 0.99], (0.9, 0.95))
    assert not same([0.9], (0.9, 0.99))
