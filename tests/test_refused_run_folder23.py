"""rev_cfg23: a refused value left a half-made run folder (`.hydra/` with the bad value, `.lock`,
an empty log), and a log that never said why the run ended (lmtrain.utils.refused_run).

A run folder the command made and that holds only what Hydra, the claim and the log wrote goes
with the refusal; one that existed before (a resume, a fixed hydra.run.dir) or that holds
anything else stays, and its log ends with the `error:` line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error, tree_digest
from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.corpora import one_file_corpus

# The run log's name under the tiny runs' task name.
LOG = "train.log"


def last_log_line(folder: Path) -> str:
    (log,) = folder.glob("*.log")
    return log.read_text().rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("model.optimizer.lr=-1", "model.optimizer.lr=-1 must be positive"),
        ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
        ("seed=abc", "seed='abc' is not a whole number"),
        # After the data step ("Building model ..."): LoRA needs a pretrained model.
        ("model/peft=lora", "LoRA (model/peft=lora) needs model.pretrained"),
    ],
)
def test_a_refused_value_leaves_no_run_folder(
    tmp_path: Path, data_dir: Path, value: str, said: str
) -> None:
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=csv", value))
    assert_one_line_error(result, said)
    # paths.log_dir=<tmp>/logs did not exist: no logs/train/runs/<time>/ and nothing above it.
    assert not (tmp_path / "logs").exists(), sorted(map(str, (tmp_path / "logs").rglob("*")))
    assert "error:" not in result.stdout  # the log line goes to the log file, not the console


def test_a_named_new_folder_goes_and_its_parent_stays(tmp_path: Path, data_dir: Path) -> None:
    parent = tmp_path / "mine"
    (parent / "notes.txt").parent.mkdir()
    (parent / "notes.txt").write_text("kept\n")
    run = parent / "deeper" / "run"
    overrides = ("logger=csv", f"hydra.run.dir={run}", "model/peft=lora")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert_one_line_error(result, "needs model.pretrained")
    assert not (parent / "deeper").exists()  # made by the command, empty once the run went
    assert (parent / "notes.txt").read_text() == "kept\n"


def test_a_folder_that_existed_is_kept_and_its_log_says_why(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "existing"
    run.mkdir()
    overrides = ("logger=csv", f"hydra.run.dir={run}", "model.optimizer.lr=-1")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    line = assert_one_line_error(result, "model.optimizer.lr=-1 must be positive")
    assert (run / ".hydra" / "config.yaml").is_file()  # Hydra's, as before: nothing removed
    assert last_log_line(run).endswith(f"[ERROR] - {line}")


def test_a_refused_resume_keeps_the_run_and_logs_why(tmp_path: Path, data_dir: Path) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    run = train_csv_run(tmp_path, data_dir, corpus, "run", "trainer.max_steps=2")
    before = tree_digest(run, skip=(".lock", LOG))
    log_before = (run / LOG).read_text()
    overrides = ("logger=csv", f"hydra.run.dir={run}", "ckpt_path=last", "model.optimizer.lr=-1")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides, corpus=corpus))
    line = assert_one_line_error(result, "model.optimizer.lr=-1 must be positive")
    assert tree_digest(run, skip=(".lock", LOG)) == before
    assert (run / LOG).read_text().startswith(log_before)  # only added to
    assert last_log_line(run).endswith(f"[ERROR] - {line}")


def test_a_new_folder_with_more_than_hydras_files_is_kept(tmp_path: Path, data_dir: Path) -> None:
    """A run stopped in training (a NaN loss at step 3, nan_guard=stop) wrote its csv/ first."""
    nan = ("+callbacks.nan._target_=tests.helpers.faults.InjectNonFinite", "+callbacks.nan.step=3")
    overrides = ("logger=csv", "callbacks.text_samples=null", *nan)
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    line = assert_one_line_error(result, "non-finite loss (nan) at step 3")
    (run,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run / "csv").is_dir() and (run / ".hydra" / "config.yaml").is_file()
    assert last_log_line(run).endswith(f"[ERROR] - {line}")
