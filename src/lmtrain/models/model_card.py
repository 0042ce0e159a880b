"""The model card (README.md) of an exported folder, made with `huggingface_hub.ModelCard`.

The Hub reads the card's YAML metadata block: `library_name: transformers` and `pipeline_tag`
make the folder load and run in its widgets, `base_model` links a fine-tune to the model it came
from, `datasets` to the Hub dataset it learned from, and `model-index` holds the validation
figures (loss in nats per token, bits per byte) in the form the Hub's evaluation results take.
`ModelCardData` writes that block as the Hub expects it, and `ModelCard.load` reads it back; the
Markdown body below it is for people: architecture, data, tokenizer, steps, tokens and loss.

Only the scrubbed run config (`lmtrain.export.scrub`) reaches the card, and a local path is never
given to `base_model` or `datasets` (they must be Hub ids): it is named in the body instead.
The val loss is the run's whole-split figure when its `metrics.json` is of these weights
(`final_metrics`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from lmtrain.models.checkpoint import LoadedModel
from lmtrain.models.hf import count_parameters

log = logging.getLogger(__name__)

# Suffixes of the local files a dataset or model path may name (never a Hub id).
FILE_SUFFIXES = (".txt", ".json", ".jsonl", ".parquet", ".csv", ".gz", ".arrow", ".ckpt")


def model_card(
    loaded: LoadedModel,
    run_config: dict[str, Any],
    info: dict[str, Any],
    model_name: str | None = None,
    license: str | None = None,
    where: str = "<this folder>",
    adapter_folder: bool = False,
    plain_call: bool = True,
) -> ModelCard:
    """The card of `loaded`, trained with `run_config` (already scrubbed), which reached `info`
    (global_step, tokens_seen, val_loss, val_bpb, val_loss_scope when known; `lora` for LoRA).

    `where` is what the usage example passes to `from_pretrained`. A LoRA fine-tune names its
    base model, and how it relates to it (`base_model_relation`: its adapters merged into it, or
    an `adapter_folder` of peft's that loads on top of it). Without `plain_call` the tokenizer,
    called plainly, adds tokens training never saw (`lmtrain.models.export_tokenizer`): the
    usage example passes add_special_tokens=False.
    """
    config = loaded.model.config
    data = run_config.get("data")  # from a file: read what is there, whatever its shape
    data = data if isinstance(data, dict) else {}
    source = data.get("source") if isinstance(data.get("source"), dict) else {}
    source_name = str(source.get("_target_", "unknown")).rsplit(".", 1)[-1]
    dataset = hub_id(source.get("path")) if source_name == "HFDatasetSource" else None
    model = run_config.get("model")
    pretrained = model.get("pretrained") if isinstance(model, dict) else None
    name = model_name or f"lmtrain-{config.model_type}"
    lora = info.get("lora")
    relation = {"base_model_relation": "adapter" if adapter_folder else "merge"}
    card_data = ModelCardData(
        model_name=name,
        library_name="peft" if adapter_folder else "transformers",
        pipeline_tag="text-generation",
        tags=["lmtrain", config.model_type, *(["lora"] if lora else [])],
        license=license,
        base_model=hub_id(pretrained),
        datasets=[dataset] if dataset else None,
        eval_results=eval_results(info, dataset or source_name) or None,
        **(relation if lora and hub_id(pretrained) else {}),
    )
    if adapter_folder:
        use = USE_PEFT.format(where=where, base=(lora or {}).get("base_model"))
        contents = "LoRA adapters for peft (adapter_config.json, adapter_model.safetensors)"
    else:
        use = USE_TRANSFORMERS.format(where=where)
        contents = "a plain Hugging Face folder: safetensors weights, config, generation config"
    call = "" if plain_call else ", add_special_tokens=False"
    text = json.dumps(example_text(loaded, run_config), ensure_ascii=False)  # a Python literal
    use += f'\nids = tokenizer({text}, return_tensors="pt"{call}).input_ids'
    body = card_body(loaded, data, source_name, source, pretrained, info, name, use, contents)
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def example_text(loaded: LoadedModel, run_config: dict[str, Any]) -> str:
    """The text the usage example encodes: "Hello", or else the first of the run's sample
    prompts, or else a few of the vocabulary's letters (or other characters), that the tokenizer
    can spell. A char
    vocabulary has no unknown token: the card's fixed "Hello" raised tokenizers' "Missing [UNK]
    token" on a corpus without an `H` (red team after25)."""
    tokenizer = loaded.tokenizer
    samples = run_config.get("samples")
    prompts = samples.get("prompts") if isinstance(samples, dict) else None
    prompts = [p for p in prompts if isinstance(p, str)] if isinstance(prompts, list) else []
    chars = sorted(t for t in tokenizer.get_vocab() if len(t) == 1 and not t.isspace())
    letters = [t for t in chars if t.isalpha()] or chars  # a vocabulary of digits, say
    for text in ("Hello", *prompts, "".join(letters[:5])):
        if text.strip() and spells(tokenizer, text):
            return text
    return "Hello"


def spells(tokenizer: Any, text: str) -> bool:
    """Whether `tokenizer` encodes `text` into at least one id without failing."""
    try:
        return bool(tokenizer(text, add_special_tokens=False).input_ids)
    except Exception:  # the Rust tokenizer's bare Exception for a character it lacks
        return False


def hub_id(value: Any) -> str | None:
    """`value` when it reads as a Hub repo id (`gpt2`, `roneneldan/TinyStories`), else None: a
    path that exists here, a glob, a file name, or anything the Hub would refuse as an id."""
    if not isinstance(value, str) or not value or any(c in value for c in "*?[~"):
        return None
    if value.startswith((".", "/")) or value.lower().endswith(FILE_SUFFIXES):
        return None
    if Path(value).exists():
        return None
    try:
        validate_repo_id(value)
    except HFValidationError:
        return None
    return value


def hub_repo(value: Any) -> str | None:
    """`value` when it names a repo one can push to and load back: a hub id with its namespace
    (`me/tiny-lm`); a bare name is no model the Hub serves under that name."""
    repo = hub_id(value)
    return repo if repo and "/" in repo else None


def eval_results(info: dict[str, Any], dataset: str) -> list[EvalResult]:
    """The validation loss and bits per byte as the Hub's evaluation results (model-index)."""
    scope = info.get("val_loss_scope") or "latest validation"
    figures = [
        ("loss", "Validation loss (nats/token)", info.get("val_loss")),
        ("bits_per_byte", "Validation bits per byte", info.get("val_bpb")),
    ]
    return [
        EvalResult(
            task_type="text-generation",
            dataset_type=dataset,
            dataset_name=f"{dataset} (validation split, {scope})",
            dataset_split="validation",
            metric_type=metric,
            metric_name=label,
            metric_value=round(float(value), 6),
        )
        for metric, label, value in figures
        if value is not None
    ]


def card_body(
    loaded: LoadedModel,
    data: dict[str, Any],
    source_name: str,
    source: dict[str, Any],
    pretrained: str | None,
    info: dict[str, Any],
    name: str,
    use: str,
    contents: str,
) -> str:
    """The Markdown under the metadata: a table of what was trained on what, and how to load it
    (`use`: the code that loads it; `contents`: what the folder holds)."""
    config = loaded.model.config
    source_args = ", ".join(f"{k}={v!r}" for k, v in source.items() if not k.startswith("_"))
    tok = data.get("tokenizer") if isinstance(data.get("tokenizer"), dict) else {}
    tok_kind = str(tok.get("kind", "unknown")) + (f" ({tok['name']})" if tok.get("name") else "")
    params = count_parameters(loaded.model)["params/total"]
    # Final only for the run's end-of-training measure of these weights (`final_metrics`): a
    # checkpoint's own figure is of whatever validation came last before it was saved, and an
    # intermediate best checkpoint's card read "Final val loss".
    scope = (
        info.get("val_loss_scope")
        or "latest validation before this checkpoint; may be a subset of val"
    )
    final_word = "Final val" if info.get("val_loss_scope") else "Val"

    def fmt(value: Any, spec: str) -> str:
        return "unknown" if value is None else format(value, spec)

    rows = [
        ("Architecture", f"{config.model_type}, {params:,} parameters"),
        ("Fine-tuned from", pretrained) if pretrained else None,
        ("LoRA", lora_row(info["lora"])) if info.get("lora") else None,
        ("Data", f"{source_name}({source_args})"),
        ("Tokenizer", f"{tok_kind}, {len(loaded.tokenizer):,} tokens (fast tokenizer)"),
        ("Context", f"{data.get('block_size', 'unknown')} tokens in training"),
        ("Training steps", fmt(info.get("global_step"), ",")),
        ("Tokens seen", fmt(info.get("tokens_seen"), ",.0f")),
        (f"{final_word} loss", f"{fmt(info.get('val_loss'), '.4f')} nats/token ({scope})"),
        (f"{final_word} bits per byte", fmt(info.get("val_bpb"), ".4f"))
        if "val_bpb" in info
        else None,
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in filter(None, rows))
    return f"""
# {name}

A causal language model trained with lmtrain (PyTorch Lightning + Hydra) and exported as
{contents} and a fast tokenizer.

| | |
|---|---|
{table}

## Use

```python
{use}
print(tokenizer.decode(model.generate(ids)[0]))  # lengths: generation_config.json
```

`lmtrain.json` holds the run's full config (`python -m lmtrain.eval ckpt_path=<this folder>`
evaluates on the same data).
"""


USE_TRANSFORMERS = """from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{where}")
model = AutoModelForCausalLM.from_pretrained("{where}")"""
# An adapter folder: peft loads the adapters on top of the base model they were trained on.
USE_PEFT = """from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{where}")
# A run with model.config overrides trained another base than its config.json builds: pass
# config=AutoConfig.for_model(**<lmtrain.json's info.lora.hf_config>), as lmtrain's tools do.
base = AutoModelForCausalLM.from_pretrained("{base}")
model = PeftModel.from_pretrained(base, "{where}")"""


def lora_row(lora: dict[str, Any]) -> str:
    """The LoRA settings, for the card's table."""
    settings = lora.get("settings") or {}
    targets = settings.get("target_modules")
    targets = ", ".join(targets) if isinstance(targets, list) else targets
    return f"r={settings.get('r')}, alpha={settings.get('alpha')}, on {targets}"


def final_metrics(
    source: str, info: dict[str, Any], run_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run's whole-split val loss (and bits per byte, when the run measured them) from its
    `metrics.json`, when they belong to these weights.

    A checkpoint only knows the latest in-training validation (maybe on limit_val_batches);
    lmtrain.train measures the final weights on the whole val split into the run folder: the
    folder above the checkpoint's `checkpoints/`, or the run config's `paths.output_dir` (a
    `callbacks.model_checkpoint.dirpath` elsewhere).
    """
    if Path(source).is_dir():
        return {}
    # Only a run folder's own checkpoints/ (a copied .ckpt may sit under any metrics.json), and
    # only a metrics.json of the same step and tokens; a damaged one is passed over with a word.
    folders = [Path(source).parent.parent] if Path(source).parent.name == "checkpoints" else []
    paths = (run_config or {}).get("paths")
    output_dir = paths.get("output_dir") if isinstance(paths, dict) else None
    if isinstance(output_dir, str) and output_dir:
        folders.append(Path(output_dir))
    for metrics_path in dict.fromkeys(folder / "metrics.json" for folder in folders):
        try:
            metrics = json.loads(metrics_path.read_text())
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as err:
            why = "the card shows the checkpoint's val loss"
            log.warning("%s cannot be read (%s): %s", metrics_path, err, why)
            continue
        if not isinstance(metrics, dict) or "val/loss" not in metrics:
            continue
        if metrics.get("trainer/global_step") != info.get("global_step"):
            continue
        if info.get("tokens_seen") not in (None, metrics.get("tokens_seen")):
            continue  # another run's, at the same step
        found = {"val_loss": metrics["val/loss"], "val_loss_scope": "whole val split"}
        return found | ({"val_bpb": metrics["val/bpb"]} if "val/bpb" in metrics else {})
    return {}
