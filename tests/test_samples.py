"""The text_samples callback: a block per validation in samples.txt and a `samples` W&B table."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from tests.helpers.assertions import one_error_line
from tests.helpers.cli import run_cli, tiny_cli, wandb_summary
from tests.helpers.corpora import one_file_corpus, write_corpus
from tests.helpers.samples import blocks, train_with_samples


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("samples") / "corpus")


def test_samples_go_to_file_and_wandb_table(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    """The text side here; the W&B table's increments are read back in test_samples_table.py."""
    run_dir = tmp_path / "run"
    train_with_samples(run_dir, data_dir, corpus, "logger=wandb")

    # Validations at steps 2 and 4; the final whole-split validation (still step 4) has the
    # weights step 4's samples came from: no second block of them.
    found = blocks(run_dir / "samples.txt")
    assert [step for step, _ in found] == [2, 4]
    for _, samples in found:
        assert len(samples) == 2
        assert samples[0].startswith("The cat") and samples[1].startswith("A dog")

    table = wandb_summary(run_dir)["summary"]["samples"]
    assert table["_type"] == "incremental-table-file" and table["ncols"] == 3
    assert table["nrows"] == 4 and table["increment_num"] == 1
    (run,) = (run_dir / "wandb").glob("offline-run-*")
    last = json.loads((run / "files" / table["path"]).read_text())  # the final increment only
    assert last["columns"] == ["step", "prompt", "completion"]
    assert [row[0] for row in last["data"]] == [4, 4]
    assert [row[1] for row in last["data"]] == ["The cat", "A dog"]
    assert [(row[1] + row[2]).rstrip("\n") for row in last["data"]] == found[-1][1]
    assert all(len(row[2]) > 0 for row in last["data"])


@pytest.mark.parametrize(("steps", "sampled"), [(6, [4, 6]), (4, [4])])
def test_every_n_val_and_final_validation(
    corpus: Path, tmp_path: Path, data_dir: Path, steps: int, sampled: list[int]
) -> None:
    """every_n_val=2 samples the 2nd validation (step 4); the final one samples the final weights
    when the last validation in training did not (6 steps: validations at 2, 4 and 6)."""
    run_dir = tmp_path / "run"
    overrides = ("logger=none", f"trainer.max_steps={steps}", "samples.every_n_val=2")
    train_with_samples(run_dir, data_dir, corpus, *overrides)
    assert [step for step, _ in blocks(run_dir / "samples.txt")] == sampled


def test_sampling_leaves_training_unchanged(corpus: Path, tmp_path: Path, data_dir: Path) -> None:
    """Sampling draws from a forked RNG: with dropout on, the run trains exactly the same."""
    dropout = ["model.config.resid_pdrop=0.1", "model.config.attn_pdrop=0.1", "logger=none"]
    with_samples = train_with_samples(tmp_path / "with", data_dir, corpus, *dropout)
    without = train_with_samples(
        tmp_path / "without", data_dir, corpus, *dropout, "callbacks.text_samples=null"
    )
    assert not (tmp_path / "without" / "samples.txt").exists()
    assert [step for step, _ in blocks(tmp_path / "with" / "samples.txt")] == [2, 4]
    for key in ("train/loss", "val/loss"):
        assert with_samples[key] == without[key], key


def lowercase_corpus(folder: Path) -> Path:
    """One lowercase text file with colons: 'ROMEO:' holds four characters it lacks (R, O, M, E)."""
    path = one_file_corpus(folder)
    path.write_text(path.read_text().lower().replace(".", ":"))
    return path


@pytest.mark.parametrize(
    ("prompt", "fragments"),
    [
        ("ROMEO:", ["'ROMEO:'", "'R', 'O', 'M', 'E'", "samples.prompts=", "text_samples=null"]),
        # 66 characters, 66 tokens: the tiny model's context is 64, nothing is left to generate.
        ("to be " * 11, ["'to be to be", "66 tokens", "context is 64", "samples.prompts="]),
    ],
)
def test_bad_prompt_ends_the_run_before_training(
    prompt: str, fragments: list[str], tmp_path: Path, data_dir: Path
) -> None:
    """Checked before the first step: one line naming the prompt, exit 1, nothing saved."""
    run_dir = tmp_path / "run"
    overrides = [f"hydra.run.dir={run_dir}", "logger=none", f"samples.prompts=['{prompt}']"]
    corpus = lowercase_corpus(tmp_path / "corpus")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    assert result.returncode == 1, result.stderr[-3000:]
    line = one_error_line(result.stderr)
    assert all(f in line for f in fragments), line
    assert not (run_dir / "checkpoints").exists()
    assert not (run_dir / "samples.txt").exists()
    assert not (run_dir / "metrics.json").exists()


def test_failed_sampling_warns_and_training_goes_on(
    corpus: Path, tmp_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failure the up-front check cannot see (samples.txt cannot be written: a folder holds
    its name) is a warning at each validation; the run finishes, saves and reports."""
    run_dir = tmp_path / "run"
    (run_dir / "samples.txt").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="lmtrain.callbacks.samples"):
        metrics = train_with_samples(run_dir, data_dir, corpus, "logger=none")
    warnings = [r.getMessage() for r in caplog.records if r.name == "lmtrain.callbacks.samples"]
    assert len(warnings) == 3, warnings  # steps 2 and 4, and the final validation
    assert all("IsADirectoryError" in w and "the run goes on" in w for w in warnings), warnings
    assert metrics["trainer/global_step"] == 4
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["trainer/global_step"] == 4
    assert [p.name for p in run_dir.iterdir() if p.suffix == ".tmp"] == []


def test_a_run_killed_between_its_samples_and_checkpoint_has_each_block_once(
    tmp_path: Path, data_dir: Path
) -> None:
    """Killed after the validation at step 4 wrote its samples and best checkpoint, before its
    last.ckpt: the run resumes at step 2 and validates at 4 again. Its samples.txt has the
    blocks of an uninterrupted run, each step's once (the killed validation's block dropped)."""
    overrides = [
        "logger=csv",
        "trainer.max_steps=6",
        "callbacks.model_checkpoint.save_top_k=-1",  # a best-* file at every validation
    ]
    cli = tiny_cli(tmp_path, data_dir, *overrides)
    reference = run_cli("train", *cli, f"hydra.run.dir={tmp_path / 'reference'}")
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = tmp_path / "run"
    kill = "trainer.plugins=[{_target_:tests.helpers.faults.KillAfterSave,nth:2}]"
    killed = run_cli("train", *cli, f"hydra.run.dir={run}", kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert [step for step, _ in blocks(run / "samples.txt")] == [2, 4]
    resumed = run_cli("train", *cli, f"hydra.run.dir={run}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = [step for step, _ in blocks(tmp_path / "reference" / "samples.txt")]
    assert [step for step, _ in blocks(run / "samples.txt")] == steps, steps


def test_a_new_run_over_an_old_folder_samples_its_own_final_weights(
    corpus: Path, tmp_path: Path, data_dir: Path
) -> None:
    """`overwrite_run=true` over a folder whose samples.txt ends with a block of the same step:
    the new run's final validation is its only one, and it writes its own block (only a
    resumed run's file can hold a block of its final weights already), in a file of its own:
    the old run's blocks went before it, two runs' `=== step 4 ===` in one file."""
    run_dir = tmp_path / "run"
    train_with_samples(run_dir, data_dir, corpus, "logger=none")
    before = blocks(run_dir / "samples.txt")
    assert [step for step, _ in before] == [2, 4]
    no_validation = ["trainer.val_check_interval=100", "trainer.check_val_every_n_epoch=null"]
    again = ["overwrite_run=true", "seed=7", "logger=none", *no_validation]
    train_with_samples(run_dir, data_dir, corpus, *again)
    after = blocks(run_dir / "samples.txt")
    assert [step for step, _ in after] == [4]
    assert after[0][1] != before[1][1]  # the new run's own samples (seed 7)


@pytest.mark.parametrize(("new_tokens", "warned"), [(25, False), (30, True)])
def test_samples_past_the_training_windows_are_warned_once(
    corpus: Path, tmp_path: Path, data_dir: Path, new_tokens: int, warned: bool
) -> None:
    """32-token windows: 'The cat' (7 characters) and 30 new ones run to 37, and positions past
    32 never got a gradient; 25 new tokens end at 32. The samples are still written."""
    run_dir = tmp_path / "run"
    overrides = ("logger=none", "trainer.max_steps=2", f"samples.max_new_tokens={new_tokens}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_with_samples(run_dir, data_dir, corpus, *overrides)
    past = [str(w.message) for w in caught if "past the 32-token windows" in str(w.message)]
    expected = [
        "samples.max_new_tokens=30: a sample runs to 37 tokens, past the 32-token windows the "
        "model trains on (data.block_size=32); positions past them get no gradient, so the "
        "samples' text there is garbage: pass samples.max_new_tokens=25 or fewer, or a larger "
        "data.block_size"
    ]
    assert past == (expected if warned else []), past
    assert [step for step, _ in blocks(run_dir / "samples.txt")] == [2]
