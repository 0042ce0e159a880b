"""Every shipped config composes, every group option instantiates what it names, and every
`_target_` names what it builds where it is defined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import Logger
from omegaconf import OmegaConf

from lmtrain.errors import LMTrainError, find_cause

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG_FILES = sorted(CONFIGS.rglob("*.yaml"))


def options(group: str) -> list[str]:
    """The user choices of a config group (a `_base` file is shared keys, not a choice)."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if not p.stem.startswith("_"))


def targets(node: Any) -> Iterator[str]:
    """Every `_target_` in a loaded YAML file, nested ones included."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from targets(value)


# Targets whose class moved to a module of its own, named where saved run folders name them:
# `resume=` builds only targets the project's configs name (lmtrain.utils.stored_targets).
KEPT_FOR_SAVED_RUNS = {"lmtrain.utils.logger_runs.TensorBoardLogger"}


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_targets_name_their_defining_module(path: Path) -> None:
    """One style: our own classes by the module that defines them (lmtrain.models.module.X, not
    the package re-export lmtrain.models.X), so a config shows where the code is; every target,
    ours or a library's, must import."""
    for target in targets(OmegaConf.to_container(OmegaConf.load(path), resolve=False)):
        obj = hydra.utils.get_object(target)
        if target in KEPT_FOR_SAVED_RUNS:
            assert obj.__module__ != target.rsplit(".", 1)[0], f"{target}: drop it from the set"
        elif target.startswith("lmtrain."):
            assert f"{obj.__module__}.{obj.__qualname__}" == target, f"{path.name}: {target}"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes(experiment: str, compose_cfg) -> None:
    cfg = compose_cfg(f"experiment={experiment}", tiny=False)
    assert cfg.task_name and cfg.model._target_ and cfg.data._target_


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_composes(debug: str, compose_cfg) -> None:
    cfg = compose_cfg(f"debug={debug}")
    assert cfg.task_name == "debug"


@pytest.mark.parametrize("model", [m for m in options("model") if m != "pretrained"])
def test_model_instantiates(model: str, compose_cfg) -> None:
    cfg = compose_cfg(f"model={model}", tiny=False)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    assert isinstance(module, LightningModule)
    assert module.model.config.model_type == cfg.model.model_type


@pytest.mark.parametrize(
    ("model", "typo", "hint"),
    [("gpt2_tiny", "n_layers", "n_layer"), ("llama_tiny", "num_hidden_layer", "num_hidden_layers")],
)
def test_a_model_config_key_its_class_lacks_is_refused_with_the_nearest_name(
    model: str, typo: str, hint: str, compose_cfg
) -> None:
    """transformers keeps an unknown keyword as a plain attribute and builds the default model:
    `+model.config.n_layers=8`, Hydra's own hint, trained 2 layers while the config said 8."""
    cfg = compose_cfg(f"model={model}", f"+model.config.{typo}=8", tiny=False)
    with pytest.raises(Exception) as refusal:  # Hydra wraps what the module raised
        hydra.utils.instantiate(cfg.model, _convert_="all")
    line = str(find_cause(refusal.value, LMTrainError))
    assert f"model.config.{typo} (did you mean {hint}?) is not a setting of transformers'" in line


def test_gpt2_124m_has_124m_parameters(compose_cfg) -> None:
    cfg = compose_cfg("model=gpt2_124m", tiny=False)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    n = sum(p.numel() for p in module.model.parameters())
    assert 124e6 < n < 125e6  # GPT-2 small at its 50,257-token vocabulary


def test_shakespeare_char_fast_keeps_nanogpts_parameter_budget(compose_cfg) -> None:
    """The fast recipe may change the architecture, not the budget: at most 0.8M parameters at
    Tiny Shakespeare's vocabulary (65 characters and <|endoftext|>), as nanoGPT's baby model."""
    cfg = compose_cfg("experiment=shakespeare_char_fast", "+model.config.vocab_size=66", tiny=False)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    n = sum(p.numel() for p in module.model.parameters())
    assert module.model.config.vocab_size == 66
    assert 0.7e6 < n <= 0.8e6, n


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_instantiates(trainer: str, compose_cfg) -> None:
    """Every trainer option builds a Trainer whose checkpoints go through AtomicCheckpointIO
    (from trainer/default.yaml): a run killed mid-save keeps its previous last.ckpt."""
    cfg = compose_cfg(f"trainer={trainer}", tiny=False)
    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    if cfg.trainer.accelerator == "gpu" and torch.cuda.device_count() < cfg.trainer.devices:
        pytest.skip(f"needs {cfg.trainer.devices} GPUs")
    instance = hydra.utils.instantiate(cfg.trainer, logger=False)
    assert isinstance(instance, Trainer)
    assert type(instance.strategy.checkpoint_io).__name__ == "AtomicCheckpointIO"


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_instantiates(logger: str, compose_cfg) -> None:
    cfg = compose_cfg(f"logger={logger}")
    loggers = [hydra.utils.instantiate(entry) for entry in (cfg.get("logger") or {}).values()]
    assert all(isinstance(lg, Logger) for lg in loggers)
    assert len(loggers) == {"none": 0, "many": 3}.get(logger, 1)  # many: W&B, CSV, TensorBoard


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callbacks_instantiate(callbacks: str, compose_cfg) -> None:
    cfg = compose_cfg(f"callbacks={callbacks}", tiny=False)
    entries = (cfg.get("callbacks") or {}).values()
    instantiated = [hydra.utils.instantiate(entry) for entry in entries if entry is not None]
    assert all(isinstance(cb, Callback) for cb in instantiated)
    assert len(instantiated) == (7 if callbacks == "default" else 0)


def test_eval_needs_a_checkpoint_and_defaults_to_the_models_data(compose_cfg) -> None:
    cfg = compose_cfg(name="eval")
    assert OmegaConf.is_missing(cfg, "ckpt_path")  # required: there is nothing to evaluate
    assert cfg.get("data") is None  # the data config stored with the model, unless data=<name>
    assert isinstance(hydra.utils.instantiate(cfg.trainer, logger=False), Trainer)
