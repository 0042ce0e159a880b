"""Tiny trained checkpoints and exports for the tests of what comes after training.

Module-scoped fixtures train once per test file, so these helpers compose configs themselves
(conftest's `compose_cfg` is per test). Everything runs the real entry points in-process: `train`,
`export`, `evaluate`, `generate` on configs composed from `configs/`.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.models.checkpoint import checkpoint_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# Two layers, 32 wide, 32-token windows: trains 20 steps in a couple of seconds on a CPU.
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
TINY_RUN = [
    "data.block_size=32",
    "data.batch_size=8",
    "trainer.accelerator=cpu",
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "callbacks.rich_progress_bar=null",
    "samples.max_new_tokens=8",
]
SENTENCE_WORDS = "the quick brown fox jumps over a lazy dog and the cat sat on the mat while one "
SENTENCE_WORDS += "small bird sings in the old tree near the river"
WORDS = SENTENCE_WORDS.split()


def write_corpus(folder: Path, n_docs: int = 4, lines: int = 150, seed: int = 0) -> Path:
    """A folder of plain ASCII documents: short sentences of a small word list (learnable)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."
            for _ in range(lines)
        ]
        (folder / f"doc{i}.txt").write_text("\n".join(sentences) + "\n")
    return folder


def compose_config(name: str, run_dir: Path, data_dir: Path, *overrides: str) -> DictConfig:
    """Compose `configs/<name>.yaml` as the CLI would, with outputs in `run_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(
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


def train_tiny(run_dir: Path, data_dir: Path, corpus: Path, *overrides: str) -> Path:
    """Train a tiny model on `corpus` (BPE, GPT-2 unless overridden); return its last.ckpt."""
    from lmtrain.train import train

    arch = [] if any(o.startswith("model=") for o in overrides) else TINY_GPT2
    cfg = compose_config(
        "train",
        run_dir,
        data_dir,
        "data=text_files",
        f"data.source.path={corpus}",
        "data.tokenizer.vocab_size=300",
        "logger=none",
        *arch,
        *TINY_RUN,
        *overrides,
    )
    train(cfg)
    return run_dir / "checkpoints" / "last.ckpt"


def export_tiny(ckpt_path: Path, out_dir: Path, data_dir: Path, *overrides: str) -> Path:
    """Run lmtrain.export on `ckpt_path` into `out_dir`."""
    from lmtrain.export import export

    run_dir = out_dir.parent / f"{out_dir.name}-export-run"
    cfg = compose_config(
        "export", run_dir, data_dir, f"ckpt_path={ckpt_path}", f"out_dir={out_dir}", *overrides
    )
    return export(cfg)


def eval_tiny(path: Path, out: Path, data_dir: Path, *overrides: str) -> dict[str, float]:
    """Run lmtrain.eval on a checkpoint or folder; check metrics.json holds what it returned."""
    from lmtrain.eval import evaluate

    cfg = compose_config(
        "eval", out, data_dir, f"ckpt_path={path}", "trainer.enable_progress_bar=false", *overrides
    )
    metrics = evaluate(cfg)
    assert json.loads((out / "metrics.json").read_text())["val/loss"] == metrics["val/loss"]
    return metrics


# Runs in a fresh interpreter that cannot import lmtrain: what a user of the export has.
RELOAD_SCRIPT = """
import json, sys
sys.modules["lmtrain"] = None  # any `import lmtrain` now fails
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
results = {}
for folder, prompt, ids, new in json.loads(sys.argv[1]):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
        prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
        out = model.generate(prompt_ids, max_new_tokens=new, do_sample=False)
    completion = tokenizer.decode(out[0, prompt_ids.shape[1]:], skip_special_tokens=True)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    results[folder] = {
        "logits": logits.tolist(),
        "text": prompt + completion,
        "tokenizer": type(tokenizer).__name__,
        "tied": tied,
    }
print(json.dumps(results))
"""


def reload_in_fresh_process(requests: list[tuple[str, str, list[int], int]]) -> dict:
    """For each (folder, prompt, ids, max_new_tokens): logits of `ids` and greedy text of
    `prompt`, computed by plain transformers in a new process without lmtrain."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", RELOAD_SCRIPT, json.dumps(requests)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_from_checkpoint(
    path: str | Path,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """The HF model with the checkpoint's weights, its tokenizer, and the run's config."""
    loaded = checkpoint_model(path)
    return loaded.model, loaded.tokenizer, loaded.run_config
