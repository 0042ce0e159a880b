"""Configs composed from `configs/` as the CLI composes them, and the overrides of a tiny run.

`compose` is the one way tests build a config: conftest's per-test `compose_cfg` fixture and the
module-scoped fixtures that train once per file both call it. `TINY` is the one list that makes a
training run small and short; a test that needs more (20 steps to learn, a batch of 4 to cut
epochs at a chosen place) says so with its own overrides after it; `char_corpus_run` adds the
data and logger of an in-process run on a one-file corpus.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.helpers import ROOT
from tests.helpers.corpora import one_file_corpus

CONFIG_DIR = ROOT / "configs"

# The model part of a tiny run, GPT-2 (the default model) or Llama in its place: two layers,
# 32 wide, a 64-token context.
TINY_GPT2 = [
    "model.config.n_layer=2",
    "model.config.n_head=2",
    "model.config.n_embd=32",
    "model.config.n_positions=64",
]
TINY_LLAMA = [
    "model=llama_tiny",
    "model.config.num_hidden_layers=2",
    "model.config.num_attention_heads=4",
    "model.config.num_key_value_heads=2",
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
    "model.config.max_position_embeddings=64",
]
# The rest: 32-token windows, 8 a batch, a 300-token BPE vocabulary (a char tokenizer ignores
# it), 4 steps on the CPU with validations (2 batches) after steps 2 and 4, every step logged,
# 8 new tokens a text sample, no progress bar in the test log.
TINY_RUN = [
    "data.block_size=32",
    "data.batch_size=8",
    "data.tokenizer.vocab_size=300",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "samples.max_new_tokens=8",
]
TINY = [*TINY_GPT2, *TINY_RUN]
# experiment=shakespeare_char_fast shrunk to a few seconds: 1 Llama layer 32 wide, no progress
# bar, 60 steps of 32 windows (with the experiment, and `tiny=False` in compose_cfg).
SHRUNK_FAST = [
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "model.config.num_hidden_layers=1",
    "model.config.hidden_size=32",
    "model.config.intermediate_size=64",
    "model.config.num_attention_heads=2",
    "model.config.num_key_value_heads=2",
    "data.batch_size=32",
    "trainer.max_steps=60",
]


def char_corpus_run(tmp_path: Path, logger: str) -> list[str]:
    """Overrides, after `TINY`, for a run on a fresh `one_file_corpus` in tmp_path/corpus with a
    char tokenizer, the logger `logger` and no text samples."""
    return [
        "data=text_files",
        f"data.source.path={one_file_corpus(tmp_path / 'corpus')}",
        "data.tokenizer.kind=char",
        f"logger={logger}",
        "callbacks.text_samples=null",
    ]


def compose(name: str, run_dir: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """`configs/<name>.yaml` with `overrides`, as the CLI composes it: token caches under
    `data_dir`, the run folder `run_dir` (created), logs next to it in `run_dir.parent/logs`.

    The Hydra config is set as the running job's, so entry points called in-process (`train`,
    `evaluate`, ...) find their run folder and job number where Hydra would put them.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name=name,
            overrides=[f"paths.data_dir={data_dir}", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.log_dir = str(run_dir.parent / "logs")
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg
