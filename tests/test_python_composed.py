"""`train(cfg)` on a config composed in Python (docs/python.md, "A composed config"): what the
command line sees to is refused or taken in one line, and a run leaves the process as it found it
(red team rev_api). In-process, as a notebook runs it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from lmtrain.train import train
from lmtrain.utils.safe_load import saved_step
from tests.helpers.compose import CONFIG_DIR, TINY
from tests.helpers.corpora import one_file_corpus


def composed(tmp_path: Path, data_dir: Path, *overrides: str, hydra_node: bool = False):
    """A tiny two-step run's config, as docs/python.md composes it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
                *TINY,
                "data=text_files",
                f"data.source.path={one_file_corpus(tmp_path / 'corpus')}",
                "data.tokenizer.kind=char",
                f"paths.data_dir={data_dir}",
                f"paths.log_dir={tmp_path / 'logs'}",
                "trainer.max_steps=2",
                "callbacks.text_samples=null",
                *overrides,
            ],
            return_hydra_config=hydra_node,
        )


def refusal(cfg: DictConfig, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as stopped:
        train(cfg)
    assert stopped.value.code == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_second_run_follows_the_users_wandb_mode_not_the_first_runs(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each run follows the WANDB_MODE of its own moment. Lightning's WandbLogger set
    WANDB_MODE=dryrun for an offline run and nothing put it back; lmtrain read WANDB_MODE once,
    at import; and W&B keeps the one it saw at its first run in the process, so an offline run
    after a disabled one was disabled too (red team rev_api)."""

    def run(name: str) -> Path:
        train(composed(tmp_path, data_dir, "logger=wandb", f"paths.output_dir={tmp_path / name}"))
        assert (tmp_path / name / "metrics.json").is_file()
        return tmp_path / name / "wandb"

    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not run("first").exists()
    monkeypatch.delenv("WANDB_MODE")
    before = dict(os.environ)
    assert list(run("second").glob("offline-run-*"))
    assert dict(os.environ) == before  # no WANDB_MODE, PL_GLOBAL_SEED or PL_SEED_WORKERS left
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not run("third").exists() and not (tmp_path / "third" / "wandb_run_id").exists()


def test_resume_in_a_composed_config_is_refused_not_ignored(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """It trained from scratch in a new folder, without a word."""
    first = tmp_path / "first"
    train(composed(tmp_path, data_dir, "logger=csv", f"paths.output_dir={first}"))
    cfg = composed(tmp_path, data_dir, f"resume={first}", f"paths.output_dir={tmp_path / 'new'}")
    assert refusal(cfg, capsys) == (
        f"error: resume={first} is applied on the command line only (python -m lmtrain.train "
        "resume=...): from Python, compose with paths.output_dir=<that run's folder> and "
        "ckpt_path=last instead"
    )
    assert not (tmp_path / "new").exists()


def test_a_composed_config_without_paths_output_dir_names_it(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line named callbacks.model_checkpoint.dirpath, the first setting that interpolates
    Hydra's job folder."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # no Hydra job, as in a notebook
    line = refusal(composed(tmp_path, data_dir), capsys)
    assert line.startswith("error: paths.output_dir cannot be resolved ("), line
    assert line.endswith("compose it with paths.output_dir=<the run's folder>"), line


@pytest.mark.parametrize("form", ["with Hydra's node", "as a dict"])
def test_a_config_with_hydras_node_or_as_a_dict_trains(
    tmp_path: Path, data_dir: Path, form: str
) -> None:
    """`compose(..., return_hydra_config=True)` failed on Hydra's unset job settings after the
    data and the model were built; a dict was omegaconf's ValueError."""
    run = tmp_path / "run"
    cfg = composed(
        tmp_path, data_dir, "logger=csv", f"paths.output_dir={run}", hydra_node=form != "as a dict"
    )
    metrics = train(OmegaConf.to_container(cfg) if form == "as a dict" else cfg)
    assert metrics["train/loss"] > 0 and (run / "checkpoints" / "last.ckpt").is_file()


def test_ckpt_path_last_finds_the_checkpoints_of_a_dirpath_outside_the_run_folder(
    tmp_path: Path, data_dir: Path
) -> None:
    """`train(cfg)` with `ckpt_path=last` looked only in `<run>/checkpoints/` and refused a run
    whose checkpoints go to a dirpath elsewhere, which the command line resumes (docs/runs.md)."""
    run, scratch = tmp_path / "run", tmp_path / "scratch" / "ckpts"
    common = (f"paths.output_dir={run}", f"callbacks.model_checkpoint.dirpath={scratch}")
    train(composed(tmp_path, data_dir, *common))
    assert saved_step(scratch / "last.ckpt") == 2 and not (run / "checkpoints").exists()
    train(composed(tmp_path, data_dir, *common, "trainer.max_steps=4", "ckpt_path=last"))
    assert saved_step(scratch / "last.ckpt") == 4
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 4
