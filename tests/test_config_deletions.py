"""Config nodes deleted on the command line (`~model`, `~data.source`, `~task_name`): one line
naming the key and what to pass instead, before any work. Each was a traceback: Hydra composes
without them, and the first read (in lmtrain's code, or Hydra's of hydra.run.dir) failed."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import refuse_bad_task_name
from lmtrain.utils.config_checks import check_eval_config, check_train_config
from lmtrain.utils.removed_nodes import TRAIN_NODES, refuse_removed_nodes
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli
from tests.helpers.compose import TINY_RUN
from tests.helpers.corpora import one_file_corpus

MODELS = "<one of gpt2_124m, gpt2_tiny, llama_tiny, pretrained>"
DATA = "<one of hf_dataset, python_stdlib, shakespeare_char, text_files>"
TRAINERS = "<one of cpu, ddp, ddp_cpu, default, fsdp, fsdp_cpu, gpu>"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["~model"], f"model is not set ('~model' removed it): pass model={MODELS}"),
        (
            ["~data.source"],
            "data.source is not set ('~data.source' removed it): drop the override (each data "
            f"config sets its source), or pass data={DATA}",
        ),
        (["~trainer"], f"trainer is not set ('~trainer' removed it): pass trainer={TRAINERS}"),
        # The data's checks named data.block_size=None only, and the model not at all.
        (
            ["~model", "~data"],
            f"2 settings need a change: (1) model is not set ('~model' removed it): pass model="
            f"{MODELS}; (2) data is not set ('~data' removed it): pass data={DATA}",
        ),
    ],
)
def test_a_removed_node_is_named_before_the_other_checks(
    compose_cfg, overrides: list[str], message: str
) -> None:
    with pytest.raises(LMTrainError) as err:
        check_train_config(compose_cfg(*overrides, tiny=False))
    assert str(err.value) == message


def test_a_node_that_is_not_a_mapping_or_absent_without_hydra_is_named() -> None:
    """From Python (no command line to blame) and for a config that sets a group to a value."""
    cfg = OmegaConf.create({"model": None, "data": {"source": "corpus.txt"}, "paths": {}})
    with pytest.raises(LMTrainError) as err:
        refuse_removed_nodes(cfg, TRAIN_NODES)
    assert str(err.value) == (
        f"3 settings need a change: (1) model=None is not a config: pass model={MODELS}; (2) "
        "data.source='corpus.txt' is not a config: drop the override (each data config sets its "
        f"source), or pass data={DATA}; (3) trainer is not set: pass trainer={TRAINERS}"
    )


def test_eval_names_a_removed_trainer(compose_cfg) -> None:
    """eval builds a Lightning Trainer from it once the model is loaded: a traceback there."""
    with pytest.raises(LMTrainError) as err:
        check_eval_config(compose_cfg("ckpt_path=x.ckpt", "~trainer", name="eval"))
    assert str(err.value) == (
        f"trainer is not set ('~trainer' removed it): pass trainer={TRAINERS}"
    )


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["~model"], f"error: model is not set ('~model' removed it): pass model={MODELS}"),
        (["~data.source"], "error: data.source is not set ('~data.source' removed it): drop"),
    ],
)
def test_a_removed_node_is_one_line_before_any_work(
    tmp_path: Path, overrides: list[str], fragment: str
) -> None:
    """`~data.source` failed after the run folder was claimed; nothing is prepared here. (The
    tiny run's model part is left out: it sets keys under model.)"""
    data_dir = tmp_path / "data"
    corpus = one_file_corpus(tmp_path / "corpus")
    source = [] if "~data.source" in overrides else [f"data.source.path={corpus}"]
    settings = [*TINY_RUN, "data=text_files", "data.tokenizer.kind=char", *source]
    settings += [f"paths.data_dir={data_dir}", f"paths.log_dir={tmp_path / 'logs'}", "logger=none"]
    result = run_cli("train", *settings, *overrides)
    assert assert_one_line_error(result).startswith(fragment)
    assert not data_dir.exists(), "nothing is prepared before the check"


# What each key's removal is refused with.
RUN_FOLDER_KEYS = {
    "task_name": "~task_name removes the key the run folder's name is built from: pass "
    "task_name=<name> instead",
    "paths": "~paths removes paths.log_dir, the folder run folders go under: pass paths=default "
    "instead",
}


@pytest.mark.parametrize("entry", ["train", "eval", "generate", "export"])
@pytest.mark.parametrize("key", list(RUN_FOLDER_KEYS))
def test_a_removed_key_of_the_run_folders_name_is_one_line(
    tmp_path: Path, entry: str, key: str
) -> None:
    """hydra.run.dir interpolates both: Hydra's first read of it was a hundred-line
    InterpolationKeyError traceback, from inside Hydra."""
    settings = [] if key == "paths" else [f"paths.log_dir={tmp_path / 'logs'}"]
    if entry != "train":
        settings += ["ckpt_path=x.ckpt", *(["out_dir=x"] if entry == "export" else [])]
    result = run_cli(entry, f"~{key}", *settings)
    assert assert_one_line_error(result) == f"error: {RUN_FOLDER_KEYS[key]}"
    assert not (tmp_path / "logs").exists()


def test_a_task_name_of_null_is_still_named_as_a_folder_name() -> None:
    with pytest.raises(LMTrainError) as err:
        refuse_bad_task_name(OmegaConf.create({"task_name": None, "paths": {}}))
    assert str(err.value).startswith("task_name=None is not a folder name: pass a plain name")
