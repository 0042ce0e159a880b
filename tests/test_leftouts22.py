"""Left out of stop 51, mended in stop 52.

- The report listed a key of the sweeper's `params` that the command line fixed (`params:
  {lr: choice(0.1,0.2)}`, then `lr=0.3`) as "Swept, one value": the basic sweeper keeps the
  command line's value, Optuna's drops a fixed key from its search space.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from lmtrain.utils.sweep_plan import swept_in

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"


def sweep_config(sweeper: str, params: dict[str, str], task: list[str]) -> object:
    sweep = {"_target_": sweeper, "params": params}
    return OmegaConf.create({"hydra": {"sweeper": sweep, "overrides": {"task": task}}})


@pytest.mark.parametrize("sweeper", [BASIC, OPTUNA])
def test_a_params_key_the_command_line_fixes_is_not_swept(sweeper: str) -> None:
    params = {"optimizer.lr": "choice(0.1,0.2)", "seed": "choice(1,2)"}
    config = sweep_config(sweeper, params, ["optimizer.lr=0.3", "data.batch_size=4,8"])
    assert swept_in(config) == {"seed", "data.batch_size"}


def test_the_basic_sweeper_keeps_the_last_override_of_a_key() -> None:
    # A sweep on the command line over a fixed `params` value sweeps; Optuna drops the key.
    params = {"optimizer.lr": "0.1", "+extra": "choice(1,2)"}
    task = ["optimizer.lr=0.1,0.2", "trainer.max_steps=5"]
    assert swept_in(sweep_config(BASIC, params, task)) == {"optimizer.lr", "extra"}
    assert swept_in(sweep_config(OPTUNA, params, task)) == {"extra"}
