"""Export a checkpoint as a plain Hugging Face folder: `python -m lmtrain.export ckpt_path=<.ckpt>
out_dir=<folder>`.

The folder is what `save_pretrained` writes for the model (safetensors weights under the plain HF
names, config, generation config) and the tokenizer (always a fast tokenizer), plus a model card
(README.md) and `lmtrain.json` (the run config, secrets removed, and what training reached). So
`AutoModelForCausalLM.from_pretrained(folder)` loads it with no lmtrain installed, and lmtrain's
own tools (eval, generate, fine-tuning with model=pretrained) take it like a checkpoint.
It is written under a temporary name, reloaded and checked against the checkpoint's logits, and
only then renamed into place. The only folder it ever replaces is a previous export, and only with
overwrite=true (see `lmtrain.utils.export_dir`): never a run, the checkpoint or user files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging

from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint import LoadedModel, load_model, resolve_model_path
from lmtrain.models.hf import context_length, count_parameters
from lmtrain.utils.export_dir import (
    EXPORT_META,
    apply_umask,
    checked_out_dir,
    hold_lock,
    remove_dead_leftovers,
    replace_folder,
)
from lmtrain.utils.redact import is_secret_key, redact
from lmtrain.utils.task import task_wrapper

log = logging.getLogger(__name__)


@task_wrapper
def export(cfg: DictConfig) -> Path:
    """Write the exported folder for `cfg.ckpt_path` to `cfg.out_dir`; return its path."""
    source = resolve_model_path(cfg.ckpt_path, cfg.paths.output_dir)
    out_dir = checked_out_dir(str(cfg.out_dir), source, cfg.paths.root_dir, cfg.overwrite)
    hf_logging.disable_progress_bar()
    loaded = load_model(source)
    if not loaded.tokenizer.is_fast:
        raise LMTrainError(
            f"ckpt_path={source!r} has a slow tokenizer ({type(loaded.tokenizer).__name__}): "
            "exports carry fast tokenizers only; train with one that ships tokenizer.json"
        )
    info = {**loaded.info, **final_metrics(source, loaded.info)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_leftovers(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    lock = hold_lock(tmp)
    try:
        write_folder(tmp, loaded, info, cfg)
        apply_umask(tmp)
        if cfg.verify:
            verify_folder(tmp, loaded)
        replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if lock is not None:
            os.close(lock)
    log.info("Exported %s to %s", source, out_dir)
    return out_dir


def final_metrics(source: str, info: dict[str, Any]) -> dict[str, Any]:
    """The run's whole-split val loss from `<run>/metrics.json`, when it belongs to these weights.

    A checkpoint only knows the latest in-training validation (maybe on limit_val_batches);
    lmtrain.train measures the final weights on the whole val split into the run folder.
    """
    metrics_path = Path(source).parent.parent / "metrics.json"
    if Path(source).is_dir() or not metrics_path.is_file():
        return {}
    metrics = json.loads(metrics_path.read_text())
    if metrics.get("trainer/global_step") != info.get("global_step") or "val/loss" not in metrics:
        return {}
    return {"val_loss": metrics["val/loss"], "val_loss_scope": "whole val split"}


def write_folder(folder: Path, loaded: LoadedModel, info: dict[str, Any], cfg: DictConfig) -> None:
    """save_pretrained for model and tokenizer, then the generation config, card and meta."""
    model, tokenizer = loaded.model, loaded.tokenizer
    model.generation_config = GenerationConfig(
        **OmegaConf.to_container(cfg.generation, resolve=True),
        bos_token_id=model.config.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    # Tokenizers built here know no length limit; the model's context is the real one.
    tokenizer.model_max_length = context_length(model.config) or tokenizer.model_max_length
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    run_config = scrub(loaded.run_config)
    meta = {"run_config": run_config, "info": info, "ckpt_path": str(cfg.ckpt_path)}
    (folder / EXPORT_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(model_card(loaded, run_config, info, cfg))


def scrub(value: Any) -> Any:
    """A copy of the run config without Hydra's own node, with the keys that name a secret
    dropped (`lmtrain.utils.redact.is_secret_key`: one rule for every file a run writes) and
    strings holding a secret redacted (see `lmtrain.utils.redact`).

    Checkpoints of older runs may still hold secrets in their run config: this is the last gate.
    """
    return redact(_drop_secret_keys(value))


def _drop_secret_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _drop_secret_keys(v)
            for k, v in value.items()
            if k != "hydra" and not is_secret_key(k)
        }
    if isinstance(value, list):
        return [_drop_secret_keys(v) for v in value]
    return value


def model_card(
    loaded: LoadedModel, run_config: dict[str, Any], info: dict[str, Any], cfg: DictConfig
) -> str:
    """README.md: Hub metadata, then data, tokenizer, steps, tokens and final val loss."""
    config = loaded.model.config
    data = run_config.get("data") or {}
    source = data.get("source") or {}
    source_args = ", ".join(f"{k}={v!r}" for k, v in source.items() if not k.startswith("_"))
    source_name = str(source.get("_target_", "unknown")).rsplit(".", 1)[-1]
    tok = data.get("tokenizer") or {}
    tok_kind = tok.get("kind", "unknown") + (f" ({tok['name']})" if tok.get("name") else "")
    params = count_parameters(loaded.model)["params/total"]
    val_loss = info.get("val_loss")
    scope = info.get("val_loss_scope") or "latest validation (may be a subset of val)"
    pretrained = (run_config.get("model") or {}).get("pretrained")

    def fmt(value: Any, spec: str) -> str:
        return "unknown" if value is None else format(value, spec)

    name = cfg.model_name or f"lmtrain-{config.model_type}"
    where = cfg.model_name or str(cfg.out_dir)  # what from_pretrained is given in the example
    front = ["library_name: transformers", "pipeline_tag: text-generation"]
    front += [f"tags: [lmtrain, {config.model_type}]"]
    front += [f"license: {cfg.license}"] if cfg.license else []
    front_matter = "\n".join(front)
    rows = [
        ("Architecture", f"{config.model_type}, {params:,} parameters"),
        ("Fine-tuned from", pretrained) if pretrained else None,
        ("Data", f"{source_name}({source_args})"),
        ("Tokenizer", f"{tok_kind}, {len(loaded.tokenizer):,} tokens (fast tokenizer)"),
        ("Context", f"{data.get('block_size', 'unknown')} tokens in training"),
        ("Training steps", fmt(info.get("global_step"), ",")),
        ("Tokens seen", fmt(info.get("tokens_seen"), ",.0f")),
        ("Final val loss", f"{fmt(val_loss, '.4f')} nats/token ({scope})"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in filter(None, rows))
    return f"""---
{front_matter}
---

# {name}

A causal language model trained with lmtrain (PyTorch Lightning + Hydra) and exported as a plain
Hugging Face folder: safetensors weights, config, generation config and a fast tokenizer.

| | |
|---|---|
{table}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{where}")
model = AutoModelForCausalLM.from_pretrained("{where}")
ids = tokenizer("Hello", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))
```

`lmtrain.json` holds the run's full config (`python -m lmtrain.eval ckpt_path=<this folder>`
evaluates on the same data).
"""


@torch.inference_mode()
def verify_folder(folder: Path, loaded: LoadedModel) -> None:
    """Reload the folder with transformers alone and check it is the same model and tokenizer.

    A mismatch is a bug in the export (not the user's input), so it raises a plain error.
    """
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = loaded.model.get_input_embeddings().num_embeddings
    ids = (torch.arange(16) * 7919 % vocab).unsqueeze(0)
    expected = loaded.model(input_ids=ids.to(loaded.model.device)).logits.cpu()
    if not torch.allclose(model(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5):
        raise RuntimeError(f"the export in {folder} gives other logits than the checkpoint")
    text = loaded.tokenizer.decode(ids[0].tolist())
    if tokenizer(text).input_ids != loaded.tokenizer(text).input_ids:
        raise RuntimeError(f"the export in {folder} tokenizes differently from the checkpoint")
    if loaded.model.config.tie_word_embeddings and not tied(model):
        raise RuntimeError(f"the export in {folder} lost the tied input/output embeddings")


def tied(model: torch.nn.Module) -> bool:
    """Whether the output layer shares the input embedding's weight tensor."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


@hydra.main(version_base="1.3", config_path="../../configs", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
