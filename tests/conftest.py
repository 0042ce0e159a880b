"""Shared fixtures: composed Hydra configs shrunk for tests, and the Tiny Shakespeare path.

Tests run the real entry points in-process (`train(cfg)`) or as subprocesses; fixtures only
shrink sizes and point every output at a temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Small, fast settings applied to every composed training config unless a test overrides them.
TINY = [
    "model.config.n_layer=2",
    "model.config.n_head=2",
    "model.config.n_embd=32",
    "data.block_size=32",
    "data.batch_size=4",
    "data.tokenizer.vocab_size=512",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "samples.max_new_tokens=8",
]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One token cache for the whole session, so each corpus is tokenized once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {SHAKESPEARE}")
    return SHAKESPEARE


@pytest.fixture
def compose_cfg(tmp_path: Path, data_dir: Path) -> Callable[..., DictConfig]:
    """Compose `configs/<name>.yaml` with TINY plus `overrides`, outputs under tmp_path."""

    def _compose(*overrides: str, name: str = "train", tiny: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        base = TINY if tiny and name == "train" else []
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                config_name=name,
                overrides=[*base, f"paths.data_dir={data_dir}", *overrides],
                return_hydra_config=True,
            )
        run_dir = tmp_path / "run"
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
        run_dir.mkdir(parents=True, exist_ok=True)
        return cfg

    yield _compose
    GlobalHydra.instance().clear()
