"""The benchmark scripts on a corpus of your own, on overrides that turn validation back on, and
on an unbalanced quote (red team bench28: MEDIUM 1, LOW 5, LOW 6).

A `--data` without the characters of the sample prompt 'ROMEO:' passed every pre-check, then
failed mid-benchmark in a traceback (bench.py, bench_switches.py, which also left its temporary
folder and its W&B run open) or after the other commands' whole runs (bench_recipe.py).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from lmtrain.errors import LMTrainError
from lmtrain.utils.task import finish_wandb
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.corpora import write_play
from tests.helpers.scripts import load_script, run_script
from tests.test_bench_scripts import SMALL, assert_usage_error


def lower_case_play(folder: Path) -> Path:
    """Tiny Shakespeare's layout in lower case: no character of 'ROMEO:' but the colon."""
    play = write_play(folder / "play.txt")
    play.write_text(play.read_text().lower())
    return play


@pytest.mark.parametrize("name", ["bench", "bench_switches"])
def test_bench_and_switches_measure_a_corpus_without_the_sample_prompts_characters(
    name: str, tmp_path: Path
) -> None:
    """Their runs have no validation, so no text samples: the prompt check alone ended them in
    a traceback, with no override to turn it off in bench_switches."""
    play = lower_case_play(tmp_path)
    out = tmp_path / "latest.json"
    result = run_script(name, *SMALL[name], f"--out={out}", f"--data={play}", cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "Traceback" not in result.stderr
    report = json.loads(out.read_text())
    measured = report["overhead"]["shakespeare_char"] if name == "bench" else report["switches"]
    assert measured, report


@pytest.fixture
def no_open_wandb_run() -> Iterator[None]:
    """A W&B run left open by a failing test is not the next test's."""
    yield
    finish_wandb(1)


def test_a_failed_lightning_run_finishes_its_wandb_run_and_its_folder_goes(
    tmp_path: Path, no_open_wandb_run: None
) -> None:
    """The open W&B run kept writing into the script's temporary folder: its removal failed in
    a second traceback (Directory not empty) and left it behind, the run never finished."""
    import wandb

    bench = load_script("bench")
    play = lower_case_play(tmp_path)
    bench.read_corpus_from(play)
    quiet = ["trainer.enable_progress_bar=false", "callbacks.rich_progress_bar=null"]
    extra = [f"paths.data_dir={tmp_path / 'data'}", *quiet]  # the default logger: W&B, offline
    with tempfile.TemporaryDirectory(dir=tmp_path) as tmp:
        cfg = bench.compose_config("shakespeare_char", 2, Path(tmp) / "run", extra)
        bench.prepare_corpus(cfg, play)
        with open_dict(cfg):  # a run that fails inside fit: a prompt the corpus cannot encode
            cfg.callbacks.text_samples = OmegaConf.create(
                {
                    "_target_": "lmtrain.callbacks.samples.TextSamples",
                    "prompts": ["ROMEO:"],
                    "dirpath": tmp,
                }
            )
        with pytest.raises(LMTrainError, match="'ROMEO:' holds characters"):
            bench.run_lightning(cfg, 1)
        assert wandb.run is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "play.txt"]


@pytest.mark.parametrize("value", ["2", "1.0", "null"])
def test_bench_refuses_an_override_that_turns_validation_back_on(
    value: str, tmp_path: Path
) -> None:
    """The Lightning side validated (val/loss in its log) and the raw loop did not: the two
    sides did different work, and the ratio was recorded."""
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    overrides = ["trainer.val_check_interval=1", f"trainer.limit_val_batches={value}"]
    result = run_script(
        "bench", *SMALL["bench"], f"--out={out}", f"--data={play}", *overrides, cwd=tmp_path
    )
    assert_one_line_error(
        result, f"error: trainer.limit_val_batches={value}", "the raw loop has no validation"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["play.txt"]  # no token cache, no out


def test_bench_recipe_refuses_a_corpus_the_sample_prompts_cannot_be_encoded_by_before_any_run(
    tmp_path: Path,
) -> None:
    """lmtrain's run validates, so samples run; the prompt was checked only inside its run,
    after the Trainer's (and nanoGPT's) whole runs."""
    play = lower_case_play(tmp_path)
    out = tmp_path / "latest.json"
    args = [f"--data={play}", f"--out={out}", "--steps=1", "--repeats=1"]
    args.append(f"--lmtrain-args=paths.data_dir={tmp_path / 'data'}")
    result = run_script("bench_recipe", *args, cwd=tmp_path)
    assert_one_line_error(
        result, f"error: --data {play}: samples.prompts: 'ROMEO:'", "callbacks.text_samples=null"
    )
    assert "hf_trainer run" not in result.stderr  # nothing was timed
    assert not out.exists()


def test_bench_recipe_takes_such_a_corpus_with_samples_off(tmp_path: Path) -> None:
    """The advice of the refusal above is followed: the check passes."""
    bench_recipe = load_script("bench_recipe")
    play = lower_case_play(tmp_path)
    extra = [f"paths.data_dir={tmp_path / 'data'}"]
    with pytest.raises(LMTrainError, match="'ROMEO:'"):
        bench_recipe.prepare_lmtrain_data("shakespeare_char", play, extra)
    extra.append("callbacks.text_samples=null")
    bench_recipe.prepare_lmtrain_data("shakespeare_char", play, extra)


@pytest.mark.parametrize("flag", ["--lmtrain-args", "--trainer-args"])
def test_bench_recipe_refuses_an_unbalanced_quote_before_any_work(
    flag: str, tmp_path: Path
) -> None:
    """shlex's ValueError was a traceback, for --trainer-args after the token cache was built."""
    play = write_play(tmp_path / "play.txt")
    out = tmp_path / "latest.json"
    args = [f"--data={play}", f"--out={out}", "--steps=1", "--repeats=1", f"{flag}=--x 'y"]
    if flag == "--trainer-args":
        args.append(f"--lmtrain-args=paths.data_dir={tmp_path / 'data'}")
    result = run_script("bench_recipe", *args, cwd=tmp_path)
    assert_usage_error(result, "bench_recipe", flag, "No closing quotation")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["play.txt"]  # no token cache, no out
