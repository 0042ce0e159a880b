"""Every shipped config composes, and every group option instantiates what it names."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import Logger

from lmtrain.models import CausalLMModule
from lmtrain.utils.instantiate import instantiate_callbacks, instantiate_loggers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def test_every_group_has_its_options() -> None:
    assert {"python_stdlib", "text_files", "shakespeare_char"} <= set(options("data"))
    assert {"gpt2_tiny", "gpt2_124m", "llama_tiny", "pretrained"} <= set(options("model"))
    assert {"default", "cpu", "gpu"} <= set(options("trainer"))
    assert {"wandb", "csv", "none"} <= set(options("logger"))
    assert {"fdr", "overfit", "limit"} <= set(options("debug"))


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
    assert isinstance(module, CausalLMModule)
    assert module.model.config.model_type == cfg.model.model_type


def test_gpt2_124m_has_124m_parameters(compose_cfg) -> None:
    cfg = compose_cfg("model=gpt2_124m", tiny=False)
    module = hydra.utils.instantiate(cfg.model, _convert_="all")
    n = sum(p.numel() for p in module.model.parameters())
    assert 124e6 < n < 125e6  # GPT-2 small at its 50,257-token vocabulary


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_trainer_instantiates(trainer: str, compose_cfg) -> None:
    cfg = compose_cfg(f"trainer={trainer}")
    assert isinstance(hydra.utils.instantiate(cfg.trainer, logger=False), Trainer)


def test_gpu_trainer_composes(compose_cfg) -> None:
    cfg = compose_cfg("trainer=gpu", tiny=False)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_instantiates(logger: str, compose_cfg) -> None:
    cfg = compose_cfg(f"logger={logger}")
    loggers = instantiate_loggers(cfg.get("logger"))
    assert all(isinstance(lg, Logger) for lg in loggers)
    assert len(loggers) == (0 if logger == "none" else 1)


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callbacks_instantiate(callbacks: str, compose_cfg) -> None:
    cfg = compose_cfg(f"callbacks={callbacks}", tiny=False)
    instantiated = instantiate_callbacks(cfg.get("callbacks"))
    assert all(isinstance(cb, Callback) for cb in instantiated)
    assert len(instantiated) == (6 if callbacks == "default" else 0)


def test_eval_config_composes(compose_cfg) -> None:
    cfg = compose_cfg("ckpt_path=x.ckpt", name="eval")
    assert cfg.get("data") is None and cfg.ckpt_path == "x.ckpt"
