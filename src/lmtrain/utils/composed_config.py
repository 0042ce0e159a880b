"""A run config that reaches `lmtrain.train.train` from Python rather than from the command line.

docs/python.md composes the config with Hydra's `compose()` and calls `train(cfg)`. Three things
the command line sees to are then the caller's, and each failed far from its cause:
- the run folder: `paths.output_dir` defaults to Hydra's job folder, which a composed config
  does not have (the error named the first setting that interpolates it, a checkpoint dirpath);
- `resume=`: a Hydra callback of the command line applies it, so a composed config trained from
  scratch in a new folder, without a word;
- Hydra's own node, which `compose(..., return_hydra_config=True)` adds (the habit of
  lightning-hydra-template's tests) half unset: storing the run config failed on it after the
  data and the model were built.
A plain dict (`OmegaConf.to_container(cfg)`) is taken as the config it holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lmtrain.errors import LMTrainError, first_line


def run_config(cfg: Any) -> DictConfig:
    """`cfg` as train() reads it: a DictConfig without Hydra's node, whose run folder resolves
    and whose `resume=` (if any) was applied; LMTrainError otherwise."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if not isinstance(cfg, DictConfig):
        raise LMTrainError(
            f"train() takes the run config (a DictConfig from hydra.compose, or a dict), not "
            f"{type(cfg).__name__}: see docs/python.md"
        )
    if "hydra" in cfg:  # the job's settings are Hydra's; nothing of the run reads them here
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    try:
        output_dir = OmegaConf.select(cfg, "paths.output_dir")
    except OmegaConfBaseException as err:
        raise LMTrainError(
            f"paths.output_dir cannot be resolved ({first_line(err)}): a config composed outside "
            "a command-line run has no Hydra job folder; compose it with "
            "paths.output_dir=<the run's folder>"
        ) from None
    resume = OmegaConf.select(cfg, "resume", throw_on_resolution_failure=False)
    if resume in (None, "") or output_dir is None:
        return cfg
    if Path(str(resume)).resolve() != Path(str(output_dir)).resolve():  # applied: the same
        raise LMTrainError(
            f"resume={resume} is applied on the command line only (python -m lmtrain.train "
            "resume=...): from Python, compose with paths.output_dir=<that run's folder> and "
            "ckpt_path=last instead"
        )
    return cfg
