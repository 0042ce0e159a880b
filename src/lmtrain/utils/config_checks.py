"""Every numeric and enumerated setting of each entry point, checked before work starts.

Hydra composes whatever the command line says (`model.optimizer.lr=abc`, `data.block_size=-3`),
and the first use of a bad value is often minutes later, deep in a library, as a traceback (or,
worse, a run that trains on nonsense). Each `check_*` reads the composed config, records every
problem (lmtrain.utils.checks.Problems) and raises one line listing them all. Settings that
their own component checks (a source's paths, a tokenizer's kind) are checked there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.data.tokenizers import check_tokenizer_config
from lmtrain.utils.checks import Problems

# Width / head pairs of the HF configs we ship (GPT-2, Llama): the width must split into heads.
HEAD_SPLITS = (("n_embd", "n_head"), ("hidden_size", "num_attention_heads"))
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# Lightning's precision settings (its own check comes later, as a traceback).
PRECISIONS = (
    "32-true",
    "bf16-mixed",
    "bf16-true",
    "16-mixed",
    "16-true",
    "64-true",
    "32",
    "16",
    "bf16",
    "64",
)


def plain(cfg: DictConfig | Mapping[str, Any] | None) -> dict[str, Any]:
    """A composed config (or one of its nodes) as plain values, interpolations resolved."""
    if cfg is None:
        return {}
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return dict(cfg)


def check_train_config(cfg: DictConfig) -> None:
    problems = Problems()
    problems.integer("seed", cfg.get("seed"), optional=True)
    problems.integer("global_batch_size", cfg.get("global_batch_size"), 1, optional=True)
    # bool("no") is True: a yes/no setting that guards a run's files takes only true or false.
    problems.boolean("overwrite_run", cfg.get("overwrite_run", False))
    check_data(plain(cfg.get("data")), problems)
    check_model(plain(cfg.get("model")), problems)
    check_seq_len_warmup(plain(cfg.get("model")), cfg.get("data", {}).get("block_size"), problems)
    check_trainer(plain(cfg.get("trainer")), problems)
    check_samples(plain(cfg.get("samples")), "samples", problems)
    problems.raise_if_any()


def check_eval_config(cfg: DictConfig) -> None:
    problems = Problems()
    problems.integer("seed", cfg.get("seed"), optional=True)
    if cfg.get("data") is not None:
        check_data(plain(cfg.data), problems, tokenizer=False)  # the model's own tokenizer
    problems.raise_if_any()


def check_export_config(cfg: DictConfig) -> None:
    problems = Problems()
    problems.boolean("overwrite", cfg.get("overwrite", False))
    problems.boolean("verify", cfg.get("verify", True))
    problems.boolean("merge", cfg.get("merge", True))
    problems.raise_if_any()


def check_generate_config(cfg: DictConfig) -> None:
    problems = Problems()
    problems.integer("seed", cfg.get("seed"), optional=True)
    problems.integer("num_samples", cfg.get("num_samples"), 1)
    problems.boolean("stop_at_eos", cfg.get("stop_at_eos", True))
    greedy = cfg.get("greedy", False)
    if problems.boolean("greedy", greedy):
        check_samples(plain(cfg), "", problems, greedy=greedy)
    problems.number("top_p", cfg.get("top_p"), low=0, high=1, low_open=True, optional=True)
    device = cfg.get("device")
    if not (isinstance(device, str) and DEVICE.fullmatch(device)):
        problems.add(f"device={device!r} is unknown: use auto, cpu, cuda, cuda:<index> or mps")
    problems.raise_if_any()


def check_data(data: dict[str, Any], problems: Problems, tokenizer: bool = True) -> None:
    problems.integer("data.block_size", data.get("block_size"), 1)
    problems.integer("data.batch_size", data.get("batch_size"), 1)
    problems.integer("data.num_workers", data.get("num_workers", 0), 0)
    problems.integer("data.prepare_workers", data.get("prepare_workers"), 1, optional=True)
    problems.number("data.prepare_chunk_mb", data.get("prepare_chunk_mb", 1), low=0, low_open=True)
    source = data.get("source") or {}
    if "val_fraction" in source:
        problems.number(
            "data.source.val_fraction", source["val_fraction"], low=0, high=1, high_open=True
        )
    if tokenizer and isinstance(data.get("tokenizer"), Mapping):
        check_tokenizer_config(data["tokenizer"], problems)


def check_model(model: dict[str, Any], problems: Problems) -> None:
    optimizer = model.get("optimizer") or {}
    problems.number("model.optimizer.lr", optimizer.get("lr", 1e-3), low=0, low_open=True)
    problems.number("model.optimizer.weight_decay", optimizer.get("weight_decay", 0), low=0)
    problems.number("model.optimizer.eps", optimizer.get("eps", 1e-8), low=0, low_open=True)
    for i, beta in enumerate(optimizer.get("betas") or ()):
        problems.number(f"model.optimizer.betas[{i}]", beta, low=0, high=1, high_open=True)
    config = model.get("config") or {}
    for key, value in config.items():
        if key.endswith(("pdrop", "dropout")):
            problems.number(f"model.config.{key}", value, low=0, high=1, high_open=True)
        elif key.startswith(("n_", "num_")) or key.endswith(("_size", "_positions")):
            # null: the HF config's default (vocab_size: the tokenizer's)
            problems.integer(f"model.config.{key}", value, 1, optional=True)
    for width, heads in HEAD_SPLITS:
        w, h = config.get(width), config.get(heads)
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 and w % h:
            problems.add(
                f"model.config.{width}={w} does not split into model.config.{heads}={h} heads: "
                f"pass a {width} that is a multiple of {h}, or another {heads}"
            )


def check_seq_len_warmup(model: dict[str, Any], block_size: Any, problems: Problems) -> None:
    """model.seq_len_warmup: null, or `start` tokens (fewer than data.block_size) and `steps`."""
    warmup = model.get("seq_len_warmup")
    if warmup is None:
        return
    example = "model.seq_len_warmup='{start: 16, steps: 60}'"
    if not isinstance(warmup, Mapping) or set(warmup) != {"start", "steps"}:
        problems.add(f"model.seq_len_warmup={warmup!r}: pass null or {example}")
        return
    start = warmup["start"]
    problems.integer("model.seq_len_warmup.steps", warmup["steps"], 1)
    valid_start = problems.integer("model.seq_len_warmup.start", start, 1)
    if valid_start and isinstance(block_size, int) and start >= block_size:
        problems.add(
            f"model.seq_len_warmup.start={start} is not shorter than the windows "
            f"(data.block_size={block_size}): pass a smaller start, or model.seq_len_warmup=null"
        )


def check_trainer(trainer: dict[str, Any], problems: Problems) -> None:
    precision = trainer.get("precision", "32-true")
    problems.choice("trainer.precision", str(precision), PRECISIONS)
    steps = trainer.get("max_steps", -1)
    if problems.integer("trainer.max_steps", steps, -1) and steps == 0:
        problems.add("trainer.max_steps=0 trains nothing: pass a positive number of steps")
    interval = trainer.get("val_check_interval")
    problems.number("trainer.val_check_interval", interval, low=0, low_open=True, optional=True)
    limit = trainer.get("limit_val_batches")
    problems.number("trainer.limit_val_batches", limit, low=0, optional=True)
    problems.integer("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), 0)
    problems.integer(
        "trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1
    )
    problems.number(
        "trainer.gradient_clip_val", trainer.get("gradient_clip_val"), low=0, optional=True
    )


def check_samples(
    samples: dict[str, Any], prefix: str, problems: Problems, greedy: bool = False
) -> None:
    """Sampling settings, under `samples.` (training) or at the top level (generate)."""
    key = f"{prefix}." if prefix else ""
    problems.integer(f"{key}max_new_tokens", samples.get("max_new_tokens", 1), 1)
    if not greedy:
        temperature = samples.get("temperature", 1.0)
        greedy_hint = "" if prefix else ", or greedy=true"
        problems.number(f"{key}temperature", temperature, low=0, low_open=True, hint=greedy_hint)
    problems.integer(f"{key}top_k", samples.get("top_k"), 1, optional=True)
    if prefix:
        problems.integer(f"{key}every_n_val", samples.get("every_n_val", 1), 1)
