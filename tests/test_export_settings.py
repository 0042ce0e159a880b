"""`lmtrain.export`'s own settings: `generation.*` (what generation_config.json holds) and
`out_dir`.

A bad value is refused in one line before anything is written; a good one gives a folder whose
generation_config.json a plain `model.generate(ids)` runs with (no arguments: the defaults it
saved are what run). One tiny GPT-2 (char tokenizer, 64 positions) serves every test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmtrain.utils.export_dir import restore_interrupted_swap
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_GPT2, TINY_RUN, compose
from tests.helpers.corpora import write_corpus
from tests.helpers.runs import export_tiny

WINDOW = 32  # TINY_RUN's data.block_size, below TINY_GPT2's 64 positions: the trained windows


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """last.ckpt of a 4-step tiny GPT-2 run with a char tokenizer."""
    from lmtrain.train import train

    root = tmp_path_factory.mktemp("export-settings")
    corpus = write_corpus(root / "corpus")
    run = root / "run"
    overrides = ["data=text_files", f"data.source.path={corpus}", "data.tokenizer.kind=char"]
    train(compose("train", run, data_dir, *TINY_GPT2, *TINY_RUN, *overrides, "logger=none"))
    return run / "checkpoints" / "last.ckpt"


def plain_generate(folder: Path) -> torch.Tensor:
    """What a user of the export runs: `from_pretrained`, then `generate(ids)` and nothing else."""
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return model.generate(torch.tensor([[5, 6, 7, 8, 9]]))


def saved(folder: Path) -> dict:
    return json.loads((folder / "generation_config.json").read_text())


def test_bad_settings_are_refused_by_the_command_in_one_line_before_anything_is_written(
    ckpt: Path, tmp_path: Path
) -> None:
    """out_dir=null exported into a folder named `None`; max_new_tokens=0 was a traceback after
    the model was loaded; temperature=-1 was saved and broke every plain generate. All at once."""
    before = set(ROOT.iterdir())
    result = run_cli(
        "export",
        f"ckpt_path={ckpt}",
        "out_dir=null",
        f"paths.log_dir={tmp_path / 'logs'}",
        "generation.max_new_tokens=0",
        "generation.temperature=-1",
        "generation.top_k=0",
        "+generation.top_p=2",
        "+generation.topk=3",
        timeout=300,
    )
    assert_one_line_error(
        result,
        "6 settings need a change",
        "out_dir=None is not a folder path: pass out_dir=<folder>",
        "generation.max_new_tokens=0 must be at least 1",
        "generation.temperature=-1 must be positive",
        "generation.top_k=0 must be at least 1",
        "generation.top_p=2 must be in (0, 1]",
        "generation.topk=3 is not a setting of transformers' GenerationConfig",
    )
    assert set(ROOT.iterdir()) == before  # no folder named None in the working directory
    assert [p.name for p in tmp_path.iterdir()] == ["logs"]  # the export's own run folder


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["generation.do_sample=no"], "generation.do_sample='no' is not true or false"),
        (["+generation.eos_token_id=3"], "generation.eos_token_id=3 is set by the export"),
        (["generation=5"], "generation=5 is not a group of settings"),
        (["out_dir=true"], "out_dir=True is not a folder path: pass out_dir=<folder>, quoted"),
        (["out_dir=''"], "out_dir='' is not a folder path"),
        (["model_name=true"], "model_name=True is not text: pass model_name=<text>, quoted"),
        (["license=1"], "license=1 is not text: pass license=<text>, quoted when Hydra reads it"),
        # Checked by transformers itself: one token of model.generate, after loading the model.
        (["+generation.repetition_penalty=-1"], "generation.repetition_penalty=-1 ("),
        (["+generation.num_beams=0"], "model.generate fails with"),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    ckpt: Path, tmp_path: Path, data_dir: Path, capsys, overrides: list[str], fragment: str
) -> None:
    out_dir = tmp_path / "hf"
    with pytest.raises(SystemExit) as exit_info:
        export_tiny(ckpt, out_dir, data_dir, *overrides)
    assert exit_info.value.code == 1
    assert fragment in one_error_line(capsys.readouterr().err)
    assert not out_dir.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder


def test_greedy_export_saves_defaults_plain_generate_runs_with(
    ckpt: Path, tmp_path: Path, data_dir: Path
) -> None:
    """generation.do_sample=false, the natural way to a greedy default, was a traceback
    (export.yaml's temperature with do_sample off): the sampling-only settings are dropped."""
    folder = export_tiny(ckpt, tmp_path / "greedy", data_dir, "generation.do_sample=false")
    config = saved(folder)
    assert config["do_sample"] is False
    assert not {"temperature", "top_k", "top_p"} & set(config)
    first, second = plain_generate(folder), plain_generate(folder)
    assert torch.equal(first, second)  # greedy: the same text each time
    assert first.shape[1] > 5


def test_sampling_export_saves_what_was_passed_and_stops_at_the_trained_windows(
    ckpt: Path, tmp_path: Path, data_dir: Path
) -> None:
    """Sampling settings are saved as passed (null leaves one to transformers). export.yaml's
    max_new_tokens=200 runs past a 64-position GPT-2 (an IndexError in a plain generate), and
    past the 32-token windows it was trained on from scratch (garbage text): it is saved as
    max_length=<data.block_size>, so generation stops there."""
    overrides = ["generation.temperature=0.5", "generation.top_k=null", "+generation.top_p=0.9"]
    folder = export_tiny(ckpt, tmp_path / "sampling", data_dir, *overrides)
    config = saved(folder)
    assert config["do_sample"] is True
    assert (config["temperature"], config["top_p"], config["max_length"]) == (0.5, 0.9, WINDOW)
    assert config.get("top_k") in (None, 50)  # transformers' own default, not one we passed
    assert "max_new_tokens" not in config
    assert plain_generate(folder).shape[1] <= WINDOW


def test_a_previous_export_moved_aside_by_a_killed_exporter_is_put_back(tmp_path: Path) -> None:
    """Killed between its two renames, an exporter leaves the previous export (maybe with a hub
    clone's .git/) only in `.<name>.old-<pid>`; the next export puts it back before anything,
    where the clean-up of dead exporters' folders would have deleted it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".export.old-{dead.pid}"
    (aside / ".git").mkdir(parents=True)
    (aside / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    restore_interrupted_swap(tmp_path / "export")
    assert (tmp_path / "export" / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert not aside.exists()
