"""`logger.wandb.entity` is documented (docs/runs.md) but was not a key of
configs/logger/wandb.yaml: typed as lightning-hydra-template users type it, it was Hydra's
"not in struct" error (it needed a `+`). It is a key now, null by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from lmtrain.utils.instantiate import instantiate_loggers


def test_the_wandb_entity_is_a_key_that_reaches_wandb(
    compose_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    default = compose_cfg("logger=wandb")
    assert default.logger.wandb.entity is None
    cfg = compose_cfg("logger=wandb", "logger.wandb.entity=my-team")
    (logger,) = instantiate_loggers(cfg.logger, run_cfg=cfg)
    assert logger._wandb_init["entity"] == "my-team"  # what wandb.init receives
