"""Tiny models trained, exported and evaluated by the real entry points, in-process, and the
export reloaded by plain transformers in a process that cannot import lmtrain.

Module-scoped fixtures train once per test file with these (conftest's `compose_cfg` is per
test); everything runs `train`, `export` and `evaluate` on configs composed from `configs/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lmtrain.models.checkpoint import checkpoint_model
from tests.helpers.assertions import one_error_line
from tests.helpers.compose import TINY_GPT2, TINY_RUN, compose

# Long enough for the word-list corpus to be learned: 20 steps, validations after 10 and 20.
LEARNING_STEPS = [
    "trainer.max_steps=20",
    "trainer.val_check_interval=10",
    "trainer.log_every_n_steps=5",
]


def tiny_train_config(
    run_dir: Path, data_dir: Path, corpus: Path, *overrides: str, model: Sequence[str] = TINY_GPT2
) -> DictConfig:
    """The config `train_tiny` trains with: a tiny `model` (TINY_GPT2 or TINY_LLAMA) and run on
    `corpus` with a BPE tokenizer, `LEARNING_STEPS` long, no logger."""
    return compose(
        "train",
        run_dir,
        data_dir,
        *model,
        *TINY_RUN,
        *LEARNING_STEPS,
        "data=text_files",
        f"data.source.path={corpus}",
        "logger=none",
        *overrides,
    )


def train_tiny(
    run_dir: Path, data_dir: Path, corpus: Path, *overrides: str, model: Sequence[str] = TINY_GPT2
) -> Path:
    """Train `tiny_train_config` in `run_dir`; return its last.ckpt."""
    from lmtrain.train import train

    train(tiny_train_config(run_dir, data_dir, corpus, *overrides, model=model))
    return run_dir / "checkpoints" / "last.ckpt"


def export_tiny(ckpt_path: Path, out_dir: Path, data_dir: Path, *overrides: str) -> Path:
    """Run lmtrain.export on `ckpt_path` into `out_dir`."""
    from lmtrain.export import export

    run_dir = out_dir.parent / f"{out_dir.name}-export-run"
    cfg = compose(
        "export", run_dir, data_dir, f"ckpt_path={ckpt_path}", f"out_dir={out_dir}", *overrides
    )
    return export(cfg)


def eval_tiny(path: Path, out: Path, data_dir: Path, *overrides: str) -> dict[str, float]:
    """Run lmtrain.eval on a checkpoint or folder; check metrics.json holds what it returned."""
    from lmtrain.eval import evaluate

    cfg = compose(
        "eval", out, data_dir, f"ckpt_path={path}", "trainer.enable_progress_bar=false", *overrides
    )
    metrics = evaluate(cfg)
    assert json.loads((out / "metrics.json").read_text())["val/loss"] == metrics["val/loss"]
    return metrics


def refused_eval(ckpt: Path, out: Path, data_dir: Path, capsys: Any, *overrides: str) -> str:
    """Run lmtrain.eval in-process (`capsys`: pytest's fixture); its one `error:` line, having
    checked that it wrote no metrics.json."""
    with pytest.raises(SystemExit):
        eval_tiny(ckpt, out, data_dir, *overrides)
    assert not (out / "metrics.json").exists()
    return one_error_line(capsys.readouterr().err)


def model_from_checkpoint(
    path: str | Path,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """The HF model with the checkpoint's weights, its tokenizer, and the run's config."""
    loaded = checkpoint_model(path)
    return loaded.model, loaded.tokenizer, loaded.run_config


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
