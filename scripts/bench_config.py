"""The benchmark sizes and their train configs, for bench.py, bench_switches.py and
bench_recipe.py: composed from configs/ as `lmtrain.train` composes them, so that a benchmark
measures what a user's run would do; a bad override ends the script in one `error:` line, and
the corpus is tokenized (or found in the token cache) before any clock starts.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, open_dict

from lmtrain.errors import LMTrainError

ROOT = Path(__file__).resolve().parents[1]
SIZES: dict[str, list[str]] = {
    # nanoGPT's baby model: 4 x 4 x 128, char vocabulary, block 64, batch 12 (0.8M parameters).
    # Tiny Shakespeare is downloaded once under data/, or read from --data.
    "shakespeare_char": ["experiment=shakespeare_char"],
    # A ~10M-parameter GPT-2 (6 x 6 x 384) on the stdlib corpus, BPE 2048, block 256, batch 8.
    "gpt2_10m": [
        "data=python_stdlib",
        "model.config.n_layer=6",
        "model.config.n_head=6",
        "model.config.n_embd=384",
        "data.block_size=256",
        "data.batch_size=8",
    ],
}


def compose_train(overrides: list[str], given_as: str) -> DictConfig:
    """The train config with `overrides` (and Hydra's own); a bad one ends the script in one
    `error: <given_as>: ...` line."""
    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("train", overrides=overrides, return_hydra_config=True)
    except HydraException as err:
        sys.exit(f"error: {given_as}: {' '.join(str(err).split())}: fix or drop it")


def compose_config(size: str, steps: int, out_dir: Path, extra: list[str]) -> DictConfig:
    """The size's config with `extra` (the command line's overrides), validation and text
    samples off (the raw loop has neither); a bad override is one `error:` line."""
    GlobalHydra.instance().clear()
    overrides = [
        *SIZES[size],
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "tags=[bench]",
        *extra,
    ]
    cfg = compose_train(overrides, f"overrides {shlex.join(extra)}")
    with open_dict(cfg):
        if cfg.get("callbacks") and "text_samples" in cfg.callbacks:
            # Samples run after a validation, and a benchmark run has none: only their prompt
            # check would run, and a --data without the prompts' characters ('ROMEO:') failed
            # it mid-benchmark. Set here, not as an override: callbacks=none has no such key.
            cfg.callbacks.text_samples = None
        cfg.paths.output_dir = str(out_dir)
        cfg.hydra.runtime.output_dir = str(out_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


def read_corpus_from(data: Path | None) -> None:
    """shakespeare_char reads Tiny Shakespeare from `--data` (None: downloaded once). Set, not
    appended: a second call in one process (the tests load several scripts) names one file."""
    if data is not None:
        if not data.is_file():
            sys.exit(f"error: --data {data} is not a file: pass Tiny Shakespeare's input.txt")
        SIZES["shakespeare_char"][1:] = [f"data.source.path={data.resolve()}"]


def prepare_corpus(cfg: DictConfig, data: Path | None) -> None:
    """Tokenize outside the timing (or find the token cache) and check that both splits hold a
    window: a bad corpus ends here, before any run, with one line (`data`: the `--data` read)."""
    datamodule = hydra.utils.instantiate(cfg.data)
    try:
        datamodule.prepare_data()
        datamodule.setup("fit")
    except LMTrainError as err:
        sys.exit(f"error: --data {data}: {err}" if data is not None else f"error: {err}")
