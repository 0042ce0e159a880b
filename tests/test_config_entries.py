"""A config entry whose class refuses the user's values is one line naming the entry (its key and
`_target_`), the class's own message and what to check; a bug in lmtrain's own code keeps its
traceback. Before, these ended in Hydra's multi-line "Error executing job" or a traceback, after
data preparation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import hydra
import pytest
from hydra.errors import InstantiationException
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.train import train
from lmtrain.utils.instantiate import config_entry_error
from lmtrain.utils.task import task_wrapper
from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

LR_MONITOR = "lightning.pytorch.callbacks.LearningRateMonitor"
LR_MONITOR_CLASS = "lightning.pytorch.callbacks.lr_monitor.LearningRateMonitor"  # as Hydra names it
NO_FLASH_ATTN = importlib.util.find_spec("flash_attn") is None


def refusal(entry: dict) -> LMTrainError | None:
    """What config_entry_error makes of instantiating `entry`, found at `outer.inner`."""
    cfg = OmegaConf.create({"outer": {"inner": entry}})
    with pytest.raises(InstantiationException) as raised:
        hydra.utils.instantiate(cfg.outer.inner)
    return config_entry_error(raised.value)


def test_a_typo_in_target_names_the_key_and_the_path() -> None:
    error = refusal({"_target_": "lightning.pytorch.callbacks.LearningRateMonitr"})
    assert str(error) == (
        "outer.inner._target_='lightning.pytorch.callbacks.LearningRateMonitr' cannot be "
        "imported (ModuleNotFoundError: No module named "
        "'lightning.pytorch.callbacks.LearningRateMonitr'): check the class path's spelling, or "
        "install the package that provides it"
    )


def test_an_argument_the_class_does_not_take_names_the_entry_and_the_class() -> None:
    error = refusal({"_target_": LR_MONITOR, "bogus": 1})
    assert str(error) == (
        f"outer.inner ({LR_MONITOR_CLASS}) refused its settings (TypeError: LearningRateMonitor."
        "__init__() got an unexpected keyword argument 'bogus'): check the values under "
        "outer.inner against the arguments of LearningRateMonitor"
    )


def test_a_value_a_library_refuses_is_the_users() -> None:
    error = refusal({"_target_": LR_MONITOR, "logging_interval": "weekly"})
    assert str(error).startswith(
        f"outer.inner ({LR_MONITOR_CLASS}) refused its settings (MisconfigurationException: "
        "logging_interval should be"
    )
    error = refusal({"_target_": "math.sqrt", "_args_": [-1]})
    assert "(ValueError: math domain error)" in str(error)


@pytest.mark.parametrize(
    "entry",
    [
        # A TypeError raised by lmtrain's own line (isinstance(1, None) in find_cause): a bug.
        {"_target_": "lmtrain.errors.find_cause", "err": 1, "kind": None},
        # An error type that is not about a value (IndexError), raised by a library: a bug.
        {"_target_": "heapq.heappop", "_args_": [[]], "_convert_": "all"},
    ],
)
def test_a_bug_is_not_taken_for_a_users_value(entry: dict) -> None:
    assert refusal(entry) is None

    @task_wrapper
    def task() -> None:
        hydra.utils.instantiate(OmegaConf.create(entry))

    with pytest.raises(InstantiationException):  # the trace stays: no SystemExit, no one line
        task()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return one_file_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize(
    ("override", "line"),
    [
        (
            "+callbacks.foo=1",
            "error: callbacks.foo=1 has no _target_: give it one "
            "(callbacks.foo._target_=<class path>), or remove it (~callbacks.foo)",
        ),
        # A logger config written flat (`_target_:` at its top) was told to give its
        # `_target_` a `_target_`.
        (
            "+logger._target_=lightning.pytorch.loggers.CSVLogger",
            "error: logger._target_='lightning.pytorch.loggers.CSVLogger': the logger config "
            "holds one entry's keys where named entries belong: nest them under a name",
        ),
        # Passed through to ModelCheckpoint from lmtrain's code: a traceback, taken for a bug,
        # after the data and the model; now checked before any work.
        (
            "+callbacks.model_checkpoint.save_top_K=3",
            "error: callbacks.model_checkpoint.save_top_K is not an argument of "
            "StepScheduledCheckpoint: did you mean save_top_k?",
        ),
        (
            "trainer.devices=abc",
            "error: trainer (lightning.pytorch.trainer.trainer.Trainer) refused its settings "
            "(TypeError: `devices` selected with `CPUAccelerator` should be an int > 0.): check "
            "the values under trainer against the arguments of Trainer",
        ),
        (
            "callbacks.model_checkpoint.every_n_train_steps=-1",
            "error: callbacks.model_checkpoint.every_n_train_steps=-1 must be at least 0: pass a "
            "whole number of at least 0, or null",
        ),
        pytest.param(
            "model.attn_implementation=flash_attention_2",
            "error: model.attn_implementation='flash_attention_2' cannot be used here "
            "(FlashAttention2 has been toggled on, but it cannot be used due to the following "
            "error: the package for FlashAttention2 doesn't seem to be installed.): pass "
            "model.attn_implementation=sdpa (or eager), or install what it needs",
            marks=pytest.mark.skipif(not NO_FLASH_ATTN, reason="flash-attn is installed"),
        ),
        (
            "model.attn_implementation=bogus",
            "error: model.attn_implementation='bogus' cannot be used here (Specified "
            '`attn_implementation="bogus"` is not supported.',
        ),
    ],
)
def test_each_refused_entry_is_one_line_in_process(
    compose_cfg, corpus: Path, capsys: pytest.CaptureFixture[str], override: str, line: str
) -> None:
    cfg = compose_cfg(
        "data=text_files",
        "data.tokenizer.kind=char",
        f"data.source.path={corpus}",
        "logger=none",
        override,
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train(cfg)
    assert exit_.value.code == 1
    assert one_error_line(capsys.readouterr().err).startswith(line)


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        (
            "callbacks.lr_monitor._target_=lightning.pytorch.callbacks.LearningRateMonitr",
            ["callbacks.lr_monitor._target_='lightning.pytorch.callbacks.LearningRateMonitr'"],
        ),
        ("trainer.devices=abc", ["trainer (lightning.pytorch.trainer.trainer.Trainer)"]),
    ],
)
def test_a_refused_entry_is_one_line_from_the_command_line(
    tmp_path: Path, data_dir: Path, override: str, fragments: list[str]
) -> None:
    """Through Hydra's own job runner: its "Error executing job" block is gone too."""
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=none", override))
    assert_one_line_error(result, *fragments)
    assert "Error executing job" not in result.stdout + result.stderr
    assert result.returncode == 1
