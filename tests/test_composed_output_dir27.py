"""`paths.output_dir` that a composed config lacks, or that resolves to null, is named in one line
by train, eval, generate and export (red team api27): a config composed with
`return_hydra_config=True` and set as HydraConfig (lightning-hydra-template's tests do this), or
`paths.output_dir=null`, was a TypeError from `Path(None)`, and on the command line it left the run
folder behind; without a HydraConfig eval named `trainer.default_root_dir`, a key the user never
set, and generate and export said to "fix the ${...}" the user never wrote."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lmtrain.eval import evaluate
from lmtrain.export import export
from lmtrain.generate import generate
from lmtrain.train import train
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import CONFIG_DIR, TINY
from tests.helpers.corpora import one_file_corpus

COMPOSED_FIX = (
    "a config composed outside a command-line run has no Hydra job folder; compose it with "
    "paths.output_dir=<the run's folder>"
)


def composed(name: str, *overrides: str, hydra_node: bool = False) -> DictConfig:
    """`configs/<name>.yaml` composed as docs/python.md composes it (no job folder)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides), return_hydra_config=hydra_node)


def train_overrides(tmp_path: Path, data_dir: Path) -> list[str]:
    return [
        *TINY,
        "trainer.max_steps=2",
        "data=text_files",
        f"data.source.path={one_file_corpus(tmp_path / 'corpus')}",
        "data.tokenizer.kind=char",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "logger=csv",
        "callbacks.text_samples=null",
    ]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step run's last checkpoint, trained from a composed config."""
    tmp = tmp_path_factory.mktemp("trained")
    cfg = composed("train", *train_overrides(tmp, tmp / "data"), f"paths.output_dir={tmp / 'run'}")
    # As in a notebook: no HydraConfig (an earlier file's test in this process may have set one).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HydraConfig.instance(), "cfg", None)
        train(cfg)
    return tmp / "run" / "checkpoints" / "last.ckpt"


def last_error(call: Callable[[DictConfig], Any], cfg: DictConfig, capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        call(cfg)
    assert stopped.value.code == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.fixture
def no_hydra_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HydraConfig, as in a notebook (put back after the test)."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)


def test_train_with_hydraconfig_set_from_a_composed_config_names_paths_output_dir(
    tmp_path: Path, data_dir: Path, capsys, no_hydra_job
) -> None:
    """HydraConfig set from the composed config: its runtime.output_dir is null, and so was
    paths.output_dir; nothing is made for the refused run."""
    cfg = composed("train", *train_overrides(tmp_path, data_dir), hydra_node=True)
    HydraConfig().set_config(cfg)
    line = last_error(train, cfg, capsys)
    assert line == f"error: paths.output_dir is null: {COMPOSED_FIX}"
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("hydra_set", [False, True], ids=["output_dir=null", "HydraConfig set"])
def test_eval_with_a_null_run_folder_names_paths_output_dir(
    tmp_path: Path, ckpt: Path, capsys, no_hydra_job, hydra_set: bool
) -> None:
    common = [f"ckpt_path={ckpt}", f"paths.root_dir={tmp_path}", "trainer.accelerator=cpu"]
    null = [] if hydra_set else ["paths.output_dir=null"]
    cfg = composed("eval", *common, *null, hydra_node=hydra_set)
    if hydra_set:
        HydraConfig().set_config(cfg)
    assert last_error(evaluate, cfg, capsys) == f"error: paths.output_dir is null: {COMPOSED_FIX}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tool", ["eval", "generate", "export"])
def test_a_composed_config_without_a_run_folder_gets_trains_line(
    tmp_path: Path, ckpt: Path, capsys, no_hydra_job, tool: str
) -> None:
    """eval named trainer.default_root_dir; generate and export said to fix a `${...}`."""
    settings = {
        "eval": (evaluate, ["trainer.accelerator=cpu"]),
        "generate": (generate, ["prompt=the", "max_new_tokens=4"]),
        "export": (export, [f"out_dir={tmp_path / 'exported'}"]),
    }
    call, extra = settings[tool]
    cfg = composed(tool, f"ckpt_path={ckpt}", f"paths.root_dir={tmp_path}", *extra)
    line = last_error(call, cfg, capsys)
    assert line.startswith("error: paths.output_dir cannot be resolved ("), line
    assert line.endswith(f"): {COMPOSED_FIX}"), line
    assert list(tmp_path.iterdir()) == []


def test_generate_still_runs_with_paths_output_dir_null(
    tmp_path: Path, ckpt: Path, no_hydra_job
) -> None:
    """generate writes nothing into the run folder: a null one is no reason to refuse."""
    settings = ["paths.output_dir=null", "prompt=the", "max_new_tokens=4", "num_samples=1"]
    cfg = composed("generate", f"ckpt_path={ckpt}", f"paths.root_dir={tmp_path}", *settings)
    assert len(generate(cfg)) == 1


def test_paths_output_dir_null_on_the_command_line_is_refused_before_any_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    """It was Hydra's "Error executing job" with the TypeError, after the run folder was made."""
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "paths.output_dir=null"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: paths.output_dir=null: the run folder is Hydra's job folder (hydra.run.dir), "
        "which paths.output_dir names: drop paths.output_dir=null, or pass hydra.run.dir=<folder>"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "logs").exists()


def test_paths_output_dir_missing_on_the_command_line_is_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """`paths.output_dir=???` raised OmegaConf's MissingMandatoryValue in the null check, and
    then read as null; it is named as unresolved, with the command line's fix."""
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "paths.output_dir=???"))
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: paths.output_dir cannot be resolved (Missing mandatory value: paths.output_dir): "
        "drop paths.output_dir=..., or pass hydra.run.dir=<folder>"
    )
    assert "Traceback" not in result.stderr
