"""Configs of one's own that Hydra would pass over or refuse in its words (red team ext29, #2, #5).

A config in a `hydra.searchpath` (or `--config-dir`) folder with the name of a shipped one (an
edited copy of `logger/csv.yaml`) was passed over for the project's configs/, which Hydra
searches first: the run used the shipped config, exit 0, without a word. It now gets one
warning naming both files. An experiment without its `# @package _global_` first line whose
defaults override a group (as every real experiment's do) ended in Hydra's `Could not override
'model@experiment.model'`, which says nothing of the header: it is one `error:` line now.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli

SHADOW = "has the name of"
# An experiment of one's own with another name than any shipped one: never warned about.
OWN_EXPERIMENT = "# @package _global_\ntask_name: own_configs29\n"
# The experiment of the report (cfg2/experiment/e5.yaml): no header, an `override` default.
HEADERLESS = "defaults:\n  - override /model: llama_tiny\ntrainer:\n  max_steps: 3\n"


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of one's configs: an edited copy of the shipped logger/csv.yaml (its folder
    renamed), an experiment of its own name, and a header-less experiment."""
    folder = tmp_path_factory.mktemp("own_configs")
    (folder / "logger").mkdir()
    shipped = (ROOT / "configs" / "logger" / "csv.yaml").read_text()
    (folder / "logger" / "csv.yaml").write_text(shipped.replace("name: csv", "name: mine"))
    (folder / "experiment").mkdir()
    (folder / "experiment" / "own29.yaml").write_text(OWN_EXPERIMENT)
    (folder / "experiment" / "headerless29.yaml").write_text(HEADERLESS)
    return folder


def folder_args(own: Path, where: str) -> list[str]:
    """The command line's words that add `own` to the search path, one way or the other."""
    if where == "bare_searchpath":  # no file://: Hydra reads a folder (review)
        return [f"hydra.searchpath=[{own}]"]
    if where == "searchpath":
        return [f"hydra.searchpath=[file://{own}]"]
    return ["--config-dir", f"{own}"]


@pytest.mark.parametrize("where", ["searchpath", "config_dir"])
def test_an_own_config_with_a_shipped_name_is_named_in_one_warning(
    tmp_path: Path, data_dir: Path, own: Path, where: str
) -> None:
    """The run goes on with the shipped logger (Hydra's choice), and says so once."""
    given = folder_args(own, where)
    run = tmp_path / "run"
    args = tiny_cli(tmp_path, data_dir, "logger=csv", "experiment=own29", f"hydra.run.dir={run}")
    out = run_cli("train", *given, *args, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in (out.stdout + out.stderr).splitlines() if SHADOW in line]
    assert len(lines) == 1, lines  # the logger only: experiment/own29.yaml has its own name
    line = lines[0]
    assert "WARNING" in line, line
    for fragment in (f"{own}/logger/csv.yaml", "configs/logger/csv.yaml", "logger=csv is"):
        assert fragment in line, line
    assert "logger=my_csv" in line, line  # what to do instead
    saved = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert saved["logger"]["csv"]["name"] == "csv"  # the shipped config, as the line says
    assert (run / "csv" / "metrics.csv").is_file()
    assert saved["task_name"] == "own_configs29"  # the own experiment was read


@pytest.mark.parametrize("where", ["searchpath", "config_dir", "bare_searchpath"])
def test_an_experiment_without_the_global_header_is_one_line(own: Path, where: str) -> None:
    given = folder_args(own, where)
    out = run_cli("train", *given, "experiment=headerless29", "logger=csv")
    line = assert_one_line_error(
        out,
        "experiment=headerless29",
        f"{own}/experiment/headerless29.yaml",
        "`# @package _global_` first line",
        "override /model",
    )
    assert "Could not override" not in out.stdout + out.stderr, line


def test_the_projects_own_folder_typed_again_shadows_nothing(
    tmp_path: Path, data_dir: Path
) -> None:
    # Review: `--config-dir configs` put the same files behind themselves, one warning each.
    run = tmp_path / "run"
    args = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}")
    out = run_cli("train", "--config-dir", str(ROOT / "configs"), *args, "trainer.max_steps=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert SHADOW not in out.stdout + out.stderr
