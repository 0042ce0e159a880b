"""Hydra's own settings typed at lmtrain's entry points (red team, round 20): hydra.job.chdir,
hydra/job_logging=disabled, numbers from ${oc.env:...}, and hydra/<group>=null."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmtrain.utils.checks import Problems
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import train_tiny

CHDIR = "hydra.job.chdir=true runs the job in its run folder"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("hydra_inputs")
    corpus = write_corpus(root / "corpus")
    return train_tiny(root / "run", data_dir, corpus, "data.tokenizer.kind=char")


def test_generate_refuses_chdir_instead_of_missing_a_relative_checkpoint(
    ckpt: Path, tmp_path: Path
) -> None:
    """ckpt_path=my.ckpt, in the launch directory, 'did not exist' in the run folder."""
    relative = os.path.relpath(ckpt, ROOT)
    run = tmp_path / "run"
    result = run_cli(
        "generate", f"ckpt_path={relative}", "hydra.job.chdir=true", f"hydra.run.dir={run}"
    )
    line = assert_one_line_error(result, CHDIR, "drop hydra.job.chdir=true")
    assert "does not exist" not in line
    assert result.stdout == ""


def test_export_refuses_chdir_before_writing_out_dir_into_the_run_folder(
    ckpt: Path, tmp_path: Path
) -> None:
    """out_dir=myexport went to <run folder>/myexport, exit 0."""
    out_dir = os.path.relpath(tmp_path / "myexport", ROOT)
    run = tmp_path / "run"
    result = run_cli(
        "export",
        f"ckpt_path={ckpt}",
        f"out_dir={out_dir}",
        "hydra.job.chdir=true",
        f"hydra.run.dir={run}",
    )
    assert_one_line_error(result, CHDIR, "out_dir")
    assert not (tmp_path / "myexport").exists()
    assert not (run / out_dir).exists()


def test_eval_refuses_chdir(ckpt: Path, tmp_path: Path) -> None:
    result = run_cli(
        "eval", f"ckpt_path={ckpt}", "hydra.job.chdir=true", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert_one_line_error(result, CHDIR)
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_train_with_job_logging_disabled_trains_without_a_log_file(
    tmp_path: Path, data_dir: Path
) -> None:
    """The file handler's filename merged into Hydra's `disabled` as a handler without a class:
    ValueError: Unable to configure handler 'file', and a run folder with only .lock."""
    run = tmp_path / "run"
    overrides = ("logger=csv", f"hydra.run.dir={run}", "hydra/job_logging=disabled")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not list(run.glob("*.log"))


def test_train_still_logs_to_its_task_named_file(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    overrides = ("logger=csv", f"hydra.run.dir={run}", "task_name=mytask")
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    text = (run / "mytask.log").read_text()
    assert "][__main__][INFO] - Run folder: " in text


@pytest.mark.parametrize("off", ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"])
def test_generate_with_logging_disabled_prints_the_text_only(
    ckpt: Path, tmp_path: Path, off: str
) -> None:
    """'Unable to configure handler console': the stream merged into `disabled`."""
    args = (f"ckpt_path={ckpt}", "prompt=ab", "greedy=true", "max_new_tokens=5")
    plain = run_cli("generate", *args, f"hydra.run.dir={tmp_path / 'a'}")
    result = run_cli("generate", *args, off, f"hydra.run.dir={tmp_path / 'b'}")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == plain.stdout and result.stdout.startswith("ab")
    assert "Generating from" in plain.stderr  # logs still go to stderr by default
    if off.startswith("hydra/job_logging"):  # lmtrain's own log lines are off
        assert "Generating from" not in result.stderr


def test_a_number_from_an_environment_variable_is_named_as_text() -> None:
    problems = Problems()
    problems.integer("seed", "42", 0, optional=True, maximum=2**32 - 1)
    problems.number("model.optimizer.lr", "1e-3", low=0, low_open=True)
    problems.integer("data.batch_size", "abc", 1)
    problems.integer("data.block_size", 4.0, 1)
    seed, lr, words, real = problems.found
    assert seed.startswith("seed='42' is not a whole number: pass a whole number from 0 to")
    assert "it is text" in seed and """'seed="${oc.decode:${oc.env:<VAR>}}"'""" in seed
    assert "seed=42)" in seed
    assert "it is text" in lr and "model.optimizer.lr=1e-3)" in lr
    assert words == "data.batch_size='abc' is not a whole number: pass a whole number of at least 1"
    assert "text" not in real


def test_seed_from_an_environment_variable_says_how_to_decode_it(
    ckpt: Path, tmp_path: Path
) -> None:
    args = (f"ckpt_path={ckpt}", "prompt=ab", "max_new_tokens=3")
    env = {"SEED": "42"}
    run = f"hydra.run.dir={tmp_path / 'a'}"
    result = run_cli("generate", *args, "seed=${oc.env:SEED}", run, env=env)
    assert_one_line_error(result, "seed='42'", "${oc.decode:${oc.env:<VAR>}}")
    run = f"hydra.run.dir={tmp_path / 'b'}"
    decoded = run_cli("generate", *args, 'seed="${oc.decode:${oc.env:SEED}}"', run, env=env)
    assert decoded.returncode == 0, decoded.stderr[-3000:]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("hydra/sweeper=null", "basic"),
        ("hydra/job_logging=null", "disabled"),
        ("+hydra/launcher=NULL", "basic"),
    ],
)
def test_a_hydra_group_set_to_null_is_one_line(override: str, named: str) -> None:
    """Hydra's 'Config group override must be a string or a list. Got NoneType' traceback."""
    result = run_cli("train", override)
    line = assert_one_line_error(result, override, "null is none")
    assert named in line
