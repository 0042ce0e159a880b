"""Red team dist26 #2: `trainer=fsdp_cpu` with model/optimizer=muon (optimizer parts) or
model/peft=lora was refused in one line only once both ranks had started (in configure_model /
configure_optimizers), after data preparation, and the refused run's folder stayed. Both are read
from the config alone now, before any rank starts: one line, exit 1, no token cache, no folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import TINY_RUN

MUON = "model.optimizer with parts (muon, adamw) is not supported with trainer=fsdp"
LORA = "LoRA (model/peft=lora) does not run under trainer=fsdp"
# What a run prints once its ranks have started (Lightning's launcher).
RANKS_STARTED = "distributed processes registered"


def assert_refused_before_ranks(out, data_dir: Path, logs: Path, *fragments: str) -> None:
    """One line naming `fragments`, exit 1, no rank started, no token cache, no run folder."""
    assert_one_line_error(out, *fragments)
    assert out.returncode == 1, out.stderr[-2000:]
    assert RANKS_STARTED not in out.stdout + out.stderr, out.stderr[-2000:]
    assert not data_dir.exists() or not any(data_dir.iterdir())  # no token cache built
    assert not logs.exists() or not any(logs.rglob(".hydra")), sorted(logs.rglob("*"))


def test_muon_under_fsdp_is_refused_before_the_ranks_start(tmp_path: Path) -> None:
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    overrides = ("trainer=fsdp_cpu", "model/optimizer=muon", "logger=csv")
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert_refused_before_ranks(out, data_dir, logs, MUON, "use model/optimizer=adamw")


def test_lora_under_fsdp_is_refused_before_the_ranks_start(
    base: Path, new_text: Path, tmp_path: Path
) -> None:
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    out = run_cli(
        "train",
        "experiment=finetune_lora",
        f"model.pretrained={base}",
        f"data.source.path={new_text}",
        *TINY_RUN,
        "trainer=fsdp_cpu",
        "logger=csv",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={logs}",
    )
    assert_refused_before_ranks(out, data_dir, logs, LORA, "model/peft=none")


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.peft=lora"], LORA),  # the plain value: the group's defaults
        (["model/optimizer=muon", "model.peft=lora"], MUON),  # both, in one line
    ],
)
def test_sharded_model_refusals_read_the_config(compose_cfg, overrides, line) -> None:
    cfg = compose_cfg("trainer=fsdp_cpu", *overrides)
    with pytest.raises(LMTrainError) as err:
        check_train_config(cfg)
    assert line in str(err.value)
    assert LORA in str(err.value)


def test_skipped_micro_batches_under_fsdp_are_refused_from_the_config(compose_cfg) -> None:
    cfg = compose_cfg("trainer=fsdp_cpu", "model.nan_guard=skip")
    with pytest.raises(LMTrainError, match=r"model\.nan_guard=skip is not supported with trainer"):
        check_train_config(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        ["trainer=ddp_cpu", "model/optimizer=muon"],  # not sharded: Muon trains under DDP
        ["trainer=fsdp_cpu", "model/peft=none"],
        ["trainer=fsdp_cpu"],  # AdamW, no LoRA: the FSDP run of the tests
    ],
)
def test_what_fsdp_can_train_passes(compose_cfg, overrides) -> None:
    check_train_config(compose_cfg(*overrides))
