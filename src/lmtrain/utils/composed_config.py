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
`run_folder` (and `resolved_run_folder`) is the check of `paths.output_dir` that eval, generate
and export make too, first: their own checks named the first setting that interpolates it
(`trainer.default_root_dir`), and a run folder that resolved to None (HydraConfig set from such
a config, or `paths.output_dir=null`) was a TypeError from `Path(None)`.
A plain dict (`OmegaConf.to_container(cfg)`) is taken as the config it holds, by every task.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lmtrain.errors import LMTrainError, first_line

# What a composed config lacks and what to pass, in every line about its run folder.
NO_JOB_FOLDER = (
    "a config composed outside a command-line run has no Hydra job folder; compose it with "
    "paths.output_dir=<the run's folder>"
)
# A run folder typed on the command line: Hydra's job folder names it.
ON_COMMAND_LINE = "drop paths.output_dir=..., or pass hydra.run.dir=<folder>"
# paths.output_dir=null typed on the command line: the run folder is Hydra's (run_folder_checks
# refuses a typed paths.output_dir other than hydra.run.dir too).
NULL_ON_COMMAND_LINE = (
    "paths.output_dir=null: the run folder is Hydra's job folder (hydra.run.dir), which "
    "paths.output_dir names: drop paths.output_dir=null, or pass hydra.run.dir=<folder>"
)


def task_config(cfg: Any, task: str = "train") -> DictConfig:
    """`cfg` as every task (train, evaluate, generate, export) reads it: a DictConfig without
    Hydra's node; LMTrainError for what is no config. Called by `task_wrapper` on the task's
    first argument: the command line's config is one already."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if not isinstance(cfg, DictConfig):
        raise LMTrainError(
            f"{task}() takes the run config (a DictConfig from hydra.compose, or a dict), not "
            f"{type(cfg).__name__}: see docs/python.md"
        )
    if "hydra" in cfg:  # the job's settings are Hydra's; nothing of the run reads them here
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    return cfg


def for_caller(line: str) -> str:
    """`line` as its reader can follow it: outside a Hydra job (`train(cfg)` from Python) the
    run folder is `paths.output_dir`, where the lines name the command line's `hydra.run.dir`."""
    return line if job_folder() is not None else line.replace("hydra.run.dir", "paths.output_dir")


def run_config(cfg: Any) -> DictConfig:
    """`cfg` as train() reads it: a DictConfig without Hydra's node, whose run folder resolves
    and whose `resume=` (if any) was applied; LMTrainError otherwise."""
    cfg = task_config(cfg)
    output_dir = run_folder(cfg)
    resume = OmegaConf.select(cfg, "resume", throw_on_resolution_failure=False)
    if resume in (None, ""):
        return cfg
    if Path(str(resume)).resolve() != Path(str(output_dir)).resolve():  # applied: the same
        raise LMTrainError(
            f"resume={resume} is applied on the command line only (python -m lmtrain.train "
            "resume=...): from Python, compose with paths.output_dir=<that run's folder> and "
            "ckpt_path=last instead"
        )
    return cfg


def run_folder(cfg: Any) -> Path:
    """`paths.output_dir` as a Path, read before any other check of `cfg` so that a composed
    config's missing job folder is named as such; LMTrainError where it does not resolve or is
    null."""
    folder = resolved_run_folder(cfg)
    if folder is None:
        if job_folder() is not None:
            raise LMTrainError(NULL_ON_COMMAND_LINE)
        raise LMTrainError(f"paths.output_dir is null: {NO_JOB_FOLDER}")
    return Path(str(folder))


def resolved_run_folder(cfg: Any) -> Any:
    """`paths.output_dir` resolved (None where it is null: generate and export, which write
    nothing into it, call this first); LMTrainError naming the composed config's fix where it
    does not resolve."""
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        return OmegaConf.select(cfg, "paths.output_dir", throw_on_missing=True)
    except OmegaConfBaseException as err:
        fix = NO_JOB_FOLDER if job_folder() is None else ON_COMMAND_LINE
        why = first_line(err)
        raise LMTrainError(f"paths.output_dir cannot be resolved ({why}): {fix}") from None


def typed_null_run_folder(cfg: DictConfig) -> str | None:
    """The refusal of `paths.output_dir=null` as the command line gives it, for a check that runs
    before Hydra makes the job folder (there `${hydra:runtime.output_dir}` is not set yet, so
    only a value given in place of it is read); None otherwise."""
    paths = cfg.get("paths")
    if not isinstance(paths, DictConfig) or "output_dir" not in paths:
        return None
    if OmegaConf.is_interpolation(paths, "output_dir") or OmegaConf.is_missing(paths, "output_dir"):
        return None  # `???` is Hydra's own error to give
    if paths.output_dir is not None:
        return None
    return NULL_ON_COMMAND_LINE


def job_folder() -> str | None:
    """The running Hydra job's output folder, as on the command line; None outside one (a
    script, a config composed in Python, with or without `HydraConfig().set_config`)."""
    if not HydraConfig.initialized():
        return None
    try:
        folder = HydraConfig.get().runtime.output_dir
    except OmegaConfBaseException:  # composed without a job (`compose()`): no folder yet
        return None
    return None if folder is None else str(folder)


def run_folder_of(args: tuple[Any, ...]) -> str:
    """The run folder of the task called with `args` (its config's `paths.output_dir`, else
    Hydra's output folder), for a line that tells how to resume; `<run folder>` if unknown."""
    cfg = args[0] if args else None
    paths = cfg.get("paths") if isinstance(cfg, DictConfig) else None
    try:
        if paths is not None and paths.get("output_dir"):
            return str(paths.output_dir)
        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.output_dir)
    except OmegaConfBaseException:  # an unresolvable interpolation: the line is still printed
        pass
    return "<run folder>"
