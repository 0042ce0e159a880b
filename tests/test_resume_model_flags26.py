"""Resuming with a changed flag that adds or removes weights (red team model26, finding 1).

`ckpt_path=<run>/checkpoints/last.ckpt` with `tie_word_embeddings` flipped (either way) or a
Llama given `attention_bias=true` passed the model check, which compared only integer settings,
and ended after data preparation in torch's "loaded state dict contains a parameter group that
doesn't match" (or "Missing key(s) ... q_proj.bias") traceback, leaving a new run folder. Now
each is one `holds another model` line, before a run folder is kept; a float (dropout) may still
change on resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli, train_csv_run
from tests.helpers.compose import TINY_LLAMA
from tests.helpers.corpora import one_file_corpus

LLAMA_CONFIG = ("model.config.n_", "model=")  # tiny_cli's GPT-2 sizes, left out for TINY_LLAMA


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("flags26_corpus"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, corpus: Path, data_dir: Path) -> Path:
    """Three 4-step runs, each a folder under the returned root: a tied GPT-2 (`tied`, the
    default), an untied one (`untied`) and a tiny Llama (`llama`)."""
    root = tmp_path_factory.mktemp("flags26_runs")
    train_csv_run(root, data_dir, corpus, "tied")
    train_csv_run(root, data_dir, corpus, "untied", "+model.config.tie_word_embeddings=false")
    llama = tiny_cli(root, data_dir, "logger=csv", f"hydra.run.dir={root / 'llama'}", corpus=corpus)
    result = run_cli("train", *as_llama(llama))
    assert result.returncode == 0, result.stderr[-3000:]
    return root


def as_llama(command: list[str]) -> list[str]:
    """`command` (tiny_cli's) with TINY_LLAMA in place of its GPT-2 sizes."""
    return [*TINY_LLAMA, *(o for o in command if not o.startswith(LLAMA_CONFIG))]


def resume(
    tmp_path: Path, data_dir: Path, corpus: Path, run: Path, *overrides: str, llama: bool = False
) -> list[str]:
    """The CLI overrides that resume `run`'s last.ckpt for 2 more steps, logs in tmp_path."""
    command = tiny_cli(
        tmp_path,
        data_dir,
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        "trainer.max_steps=6",
        *overrides,
        corpus=corpus,
    )
    return as_llama(command) if llama else command


def run_folders(logs: Path) -> list[Path]:
    """The run folders a command left under `logs` (each has its `.hydra` record)."""
    return sorted(path.parent for path in logs.rglob(".hydra")) if logs.exists() else []


@pytest.mark.parametrize(
    ("run", "override", "fragment", "llama"),
    [
        ("tied", "+model.config.tie_word_embeddings=false", "tie_word_embeddings=True", False),
        ("untied", "", "tie_word_embeddings=False in the checkpoint but True here", False),
        ("llama", "+model.config.attention_bias=true", "attention_bias=False", True),
        ("llama", "model.config.tie_word_embeddings=false", "tie_word_embeddings=True", True),
    ],
    ids=["gpt2-untie", "gpt2-tie", "llama-attention-bias", "llama-untie"],
)
def test_a_flag_that_changes_the_weights_is_refused_in_one_line_leaving_no_run_folder(
    tmp_path: Path,
    runs: Path,
    corpus: Path,
    data_dir: Path,
    run: str,
    override: str,
    fragment: str,
    llama: bool,
) -> None:
    overrides = [override] if override else []
    command = resume(tmp_path, data_dir, corpus, runs / run, *overrides, llama=llama)
    result = run_cli("train", *command)
    line = assert_one_line_error(result, "holds another model", fragment)
    assert "resume with the checkpoint's model settings" in line
    assert run_folders(tmp_path / "logs") == []


def test_a_dropout_change_still_resumes(
    tmp_path: Path, runs: Path, corpus: Path, data_dir: Path
) -> None:
    """A float keeps every weight: it may change, and the resumed run keeps its folder."""
    command = resume(tmp_path, data_dir, corpus, runs / "tied", "model.config.resid_pdrop=0.1")
    result = run_cli("train", *command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(run_folders(tmp_path / "logs")) == 1  # what a refusal must not leave
