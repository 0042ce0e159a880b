"""Where training crosses an epoch's end: whole optimizer steps, and a run that `max_epochs`
ends reports its last step.

The corpus holds 45 train windows of 32 tokens: 5 micro-batches of 8 an epoch, or 2 of 16. An
epoch of 5 micro-batches under `global_batch_size=16` (2 a step) ended in a step of one: half
the windows, half-weighted, yet counted whole in `tokens_seen`, so the run stopped training the
steps `data.batch_size=16` trains from the epoch's end on (red team H1, M3). A run ended by
`max_epochs` logged nothing at its last step unless `log_every_n_steps` divided it: metrics.json
reported an earlier step's `train/loss` and `tokens_seen` (none at all before the first logged
step), and the exported model card, not finding that metrics.json to be of the checkpoint's
weights, showed a subset val loss (red team H2).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.corpora import SENTENCE_WORDS
from tests.helpers.runs import export_tiny

TOLERANCE = 1e-5
WINDOW = 32
STEPS = 4  # two epochs of two steps of 16 windows
STEP_RUNS = {
    "one": ["data.batch_size=16"],
    "accumulated": ["data.batch_size=8", "global_batch_size=16"],
}
# Two epochs, logged every 3 steps: the last step (4) is not a logged one. Validations at each
# epoch's end on a subset (limit_val_batches=2 of TINY), so the final one is of the whole split.
EPOCH_RUN = [
    "data.batch_size=16",
    "trainer.max_steps=-1",
    "trainer.max_epochs=2",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "trainer.log_every_n_steps=3",
    "trainer.limit_val_batches=1",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("epoch_edges")
    corpus = root / "corpus.txt"
    # 1600 characters, the last 10% val: 1440 train tokens, 45 windows of 32.
    corpus.write_text((SENTENCE_WORDS + ".\n") * 15)
    corpus.write_text(corpus.read_text()[:1600])

    def train(name: str, *overrides: str) -> Path:
        return train_csv_run(root, data_dir, corpus, name, *overrides)

    done = {
        name: train(name, f"trainer.max_steps={STEPS}", *overrides)
        for name, overrides in STEP_RUNS.items()
    }
    done["epochs"] = train("epochs", *EPOCH_RUN)
    return done


def rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return [{k: v for k, v in row.items() if v} for row in csv.DictReader(f)]


def train_rows(run: Path) -> dict[int, dict[str, str]]:
    """The rows Lightning writes of each training step (train/loss), by step (from 0)."""
    return {int(row["step"]): row for row in rows(run) if "train/loss" in row}


def metrics(run: Path) -> dict[str, float]:
    return json.loads((run / "metrics.json").read_text())


def test_accumulation_trains_whole_steps_across_an_epoch_end(runs: dict[str, Path]) -> None:
    one, accumulated = train_rows(runs["one"]), train_rows(runs["accumulated"])
    assert sorted(one) == sorted(accumulated) == list(range(STEPS))
    # An epoch is two steps in both: the accumulated run's had five micro-batches, so its
    # third step was the one micro-batch left.
    epochs = [0, 0, 1, 1]
    assert [int(one[s]["epoch"]) for s in range(STEPS)] == epochs
    assert [int(accumulated[s]["epoch"]) for s in range(STEPS)] == epochs
    for step in range(STEPS):  # the same windows and gradients: the same loss and norm
        for key in ("train/loss", "train/grad_norm"):
            a, b = float(one[step][key]), float(accumulated[step][key])
            assert abs(a - b) <= TOLERANCE, f"step {step} {key}: {a} vs {b}"


@pytest.mark.parametrize("name", list(STEP_RUNS))
def test_tokens_seen_are_the_tokens_trained(runs: dict[str, Path], name: str) -> None:
    """metrics.json and the checkpoint count what the throughput monitor saw trained."""
    run = runs[name]
    trained = STEPS * 16 * WINDOW
    lengths = [float(row["train/lengths"]) for row in rows(run) if "train/lengths" in row]
    assert lengths[-1] == trained  # the monitor's own count of the windows' tokens
    assert metrics(run)["tokens_seen"] == trained
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == STEPS and ckpt["lmtrain"]["tokens_seen"] == trained


def test_a_run_ended_by_max_epochs_reports_its_last_step(
    runs: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    run = runs["epochs"]
    reported = metrics(run)
    ckpt_path = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert reported["trainer/global_step"] == ckpt["global_step"] == STEPS
    assert reported["tokens_seen"] == ckpt["lmtrain"]["tokens_seen"] == STEPS * 16 * WINDOW
    # The same windows, weights and schedule as the run ended by max_steps=4, which logs every
    # step: its last train/loss is this run's.
    last = float(train_rows(runs["one"])[STEPS - 1]["train/loss"])
    assert abs(reported["train/loss"] - last) <= TOLERANCE, (reported["train/loss"], last)

    folder = export_tiny(ckpt_path, tmp_path / "hf", data_dir)
    card = (folder / "README.md").read_text()
    assert f"| Tokens seen | {STEPS * 16 * WINDOW:,} |" in card
    assert f"{reported['val/loss']:.4f} nats/token (whole val split)" in card


def accumulated_run(tmp_path: Path, data_dir: Path, *overrides: str) -> tuple[Path, object]:
    """A run of micro-batches of 8 under accumulation of 2 on the 45-window corpus (epochs of
    5 micro-batches): its run folder and the finished command."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(((SENTENCE_WORDS + ".\n") * 15)[:1600])
    run = tmp_path / "run"
    cli = ("logger=csv", f"hydra.run.dir={run}", "data.batch_size=8", "global_batch_size=16")
    return run, run_cli("train", *tiny_cli(tmp_path, data_dir, *cli, *overrides, corpus=corpus))


def test_an_interval_past_the_epochs_whole_steps_is_refused_before_any_file(
    tmp_path: Path, data_dir: Path
) -> None:
    """An epoch of 5 micro-batches of 8 under accumulation of 2 is 4 (two whole steps): the
    early check counted 5 and let val_check_interval=5 through, so Lightning refused it after
    csv/hparams.yaml was written."""
    run, out = accumulated_run(
        tmp_path, data_dir, "trainer.val_check_interval=5", "trainer.check_val_every_n_epoch=1"
    )
    assert_one_line_error(
        out,
        "error: trainer.val_check_interval=5 batches is longer than an epoch (4 batches) with "
        "trainer.check_val_every_n_epoch=1: pass at most 4, or "
        "trainer.check_val_every_n_epoch=null",
    )
    assert not (run / "csv").exists()


@pytest.mark.parametrize("limit", ["3", "0.75"])
def test_a_train_batch_limit_inside_a_step_is_refused_before_any_file(
    tmp_path: Path, data_dir: Path, limit: str
) -> None:
    """`trainer.limit_train_batches=3` (or 0.75 of an epoch of 4) under accumulation of 2 ended
    each epoch in a step of one micro-batch, as an epoch's end did before (red team H1)."""
    run, out = accumulated_run(tmp_path, data_dir, f"+trainer.limit_train_batches={limit}")
    assert_one_line_error(
        out,
        f"error: trainer.limit_train_batches={limit} ends each epoch after 3 batches, inside an "
        "optimizer step of trainer.accumulate_grad_batches=2 batches: pass "
        "trainer.limit_train_batches=2 (a multiple of 2)",
    )
    assert not (run / "csv").exists()


def test_a_train_batch_limit_of_whole_steps_trains_them(tmp_path: Path, data_dir: Path) -> None:
    """The limit the refusal offers: two epochs of one whole step of 16 windows each."""
    run, out = accumulated_run(tmp_path, data_dir, "+trainer.limit_train_batches=2", *EPOCH_RUN[1:])
    assert out.returncode == 0, out.stderr[-3000:]
    assert metrics(run)["trainer/global_step"] == 2
    assert metrics(run)["tokens_seen"] == 2 * 16 * WINDOW
