"""A run that would train nothing, and an optimizer's yes/no argument that is not true or false,
are refused in one line before any work.

`+model.optimizer.maximize=no` arrived as the string "no", which torch reads as yes: the run
trained by gradient ascent and exited 0; `nesterov=no` kept Nesterov on, `fused=no` kept the
fused kernel, `amsgrad=no` was a traceback at the first step. `trainer.max_epochs=0` and
`trainer.limit_train_batches=0` took no step and still wrote a metrics.json that looked complete.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.train import train
from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import compose


def not_bool(key: str, value: object, nullable: bool = False) -> str:
    """What the refusal of `key=value` says (Problems.boolean's words; for `fused` and
    `foreach`, which also take null, check_yes_no's)."""
    if nullable:
        return (
            f"{key}={value!r} is not true, false or null: pass {key}=true, false, or null "
            "(torch's own choice)"
        )
    return f"{key}={value!r} is not true or false: pass {key}=true or {key}=false"


def run_files(tmp_path: Path) -> list[Path]:
    """Every metrics.json and checkpoint a run under tmp_path/logs left."""
    logs = tmp_path / "logs"
    return [*logs.rglob("metrics.json"), *logs.rglob("*.ckpt")] if logs.exists() else []


@pytest.mark.parametrize(
    ("overrides", "refused"),
    [
        # Gradient ascent, exit 0 (fused=false: the fused kernel refuses maximize on its own).
        (["+model.optimizer.maximize=no", "model.optimizer.fused=false"], ["maximize"]),
        (["model.optimizer.fused=no"], ["fused"]),  # the fused kernel all the same
        (["+model.optimizer.amsgrad=no"], ["amsgrad"]),  # a traceback at the first step
    ],
)
def test_an_adamw_yes_no_argument_that_is_not_true_or_false_is_refused(
    tmp_path: Path, data_dir: Path, overrides: list[str], refused: list[str]
) -> None:
    cli = tiny_cli(tmp_path, data_dir, "logger=none", *overrides)
    result = run_cli("train", *cli)
    keys = [f"model.optimizer.{name}" for name in refused]
    assert_one_line_error(result, *(not_bool(key, "no", key.endswith("fused")) for key in keys))
    assert run_files(tmp_path) == []


def test_each_part_of_muon_takes_only_true_or_false(tmp_path: Path, data_dir: Path) -> None:
    """Both parts are checked: Muon's nesterov=no kept Nesterov on, AdamW's fused=0 the
    fused kernel; both are named in the one line."""
    muon = "model.optimizer.muon.optimizer.nesterov"
    adamw = "model.optimizer.adamw.optimizer.fused"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", "model/optimizer=muon")
    result = run_cli("train", *cli, f"{muon}=no", f"{adamw}=0")
    line = assert_one_line_error(result, "2 settings need a change", not_bool(muon, "no"))
    assert not_bool(adamw, 0, nullable=True) in line
    assert run_files(tmp_path) == []


def test_a_swapped_optimizer_is_checked_by_its_own_signature(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SGD's yes/no arguments are found from its signature, as AdamW's are: nesterov=1 was
    SGD's ValueError (no momentum) after the data and the model; `fused: null` (torch's own
    choice) still passes."""
    sgd = [
        "model.optimizer._target_=torch.optim.SGD",
        "~model.optimizer.betas",
        "~model.optimizer.eps",
        "model.optimizer.fused=null",
        "+model.optimizer.nesterov=1",
        "+model.optimizer.maximize=false",
    ]
    cfg = compose("train", tmp_path / "run", data_dir, *tiny_cli(tmp_path, data_dir), *sgd)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train(cfg)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    key = "model.optimizer.nesterov"
    assert (
        one_error_line(err)
        == f"error: {key}=1 is not true or false: pass {key}=true or {key}=false"
    )
    assert run_files(tmp_path) == []


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=0"],
            ["trainer.max_epochs=0 trains nothing: pass a positive number of epochs"],
        ),
        (
            ["+trainer.limit_train_batches=0"],
            ["trainer.limit_train_batches=0 trains nothing: pass a positive number of batches"],
        ),
        (
            ["+trainer.limit_train_batches=0.0"],
            [
                "trainer.limit_train_batches=0.0 trains nothing",
                "drop your +trainer.limit_train_batches",
            ],
        ),
    ],
)
def test_a_run_that_would_train_nothing_is_refused(
    tmp_path: Path, data_dir: Path, overrides: list[str], fragments: list[str]
) -> None:
    """It exited 0 after no step, with a metrics.json that looked like a finished run's."""
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=csv", *overrides))
    assert_one_line_error(result, *fragments)
    assert run_files(tmp_path) == []
