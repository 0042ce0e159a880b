"""Build Hugging Face causal LMs from a config dict or from pretrained weights.

Hugging Face configs are our model zoo: `model.config` holds the keyword arguments of the HF config
class named by `model.model_type` (`gpt2`, `llama`, ...), so any architecture transformers knows
trains here without a line of model code of ours.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from lmtrain.errors import LMTrainError, first_line
from lmtrain.models.causal import check_causal, no_causal_lm
from lmtrain.models.pretrained import ATTENTION_WORDS, load_weights
from lmtrain.models.pretrained_overrides import overridden_config, refuse_unknown_config_keys
from lmtrain.models.token_ids import refuse_token_ids_outside_vocabulary
from lmtrain.utils.checks import names_local_path
from lmtrain.utils.model_config_keys import refuse_settings_elsewhere

log = logging.getLogger(__name__)


def build_causal_lm(
    model_type: str | None,
    config: dict[str, Any] | None,
    pretrained: str | None,
    attn_implementation: str | None = "sdpa",
    vocab_size: int | None = None,
    eos_token_id: int | None = None,
    frozen_base: bool = False,
) -> PreTrainedModel:
    """Return a causal LM: `from_pretrained(pretrained)` when set, else a fresh one from `config`.

    A fresh model takes its vocabulary size and end-of-text id from the tokenizer, so the
    embedding matches the data; a pretrained one keeps its own and must cover the tokenizer.
    With `pretrained`, `config` overrides config.json's settings that keep the architecture
    (dropout, ...) and `model_type` must be the folder's (`lmtrain.models.pretrained_overrides`).
    """
    if pretrained:
        model = _load_pretrained(
            pretrained, attn_implementation, vocab_size, frozen_base, model_type, config
        )
        return check_causal(model, f"model.pretrained={pretrained!r}")
    if not model_type:
        raise LMTrainError(
            "model.model_type is empty: set it (gpt2, llama, ...) or model.pretrained"
        )
    refuse_settings_elsewhere(config)  # dtype: trainer.precision's; attn_implementation
    kwargs = dict(config or {})
    if vocab_size is not None:
        kwargs["vocab_size"] = embedding_size(kwargs.get("vocab_size"), vocab_size)
    if eos_token_id is not None:
        kwargs.setdefault("bos_token_id", eos_token_id)
        kwargs.setdefault("eos_token_id", eos_token_id)
    try:
        hf_config = AutoConfig.for_model(model_type, **kwargs)
    except ValueError as err:
        raise LMTrainError(
            f"model.model_type={model_type!r} is not a transformers model type: {err}"
        ) from None
    refuse_unknown_config_keys(model_type, hf_config, config or {})
    refuse_token_ids_outside_vocabulary(hf_config, config or {})
    if type(hf_config) not in MODEL_FOR_CAUSAL_LM_MAPPING:  # t5: transformers' ValueError
        raise no_causal_lm(f"model.model_type={model_type!r}")
    if not config:  # transformers' defaults, which the command line's configs never leave
        refuse_default_size(model_type, hf_config)
    with attention_backend(attn_implementation):
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
    return check_causal(model, f"model.model_type={model_type!r}")


def refuse_default_size(model_type: str, hf_config: PretrainedConfig) -> None:
    """A model built from Python with no config gets transformers' default size: GPT-2's 124M
    parameters, but Llama's 6.5B, whose 26 GB the kernel's OOM killer ended without a word
    (red team rev_api). Counted on the meta device (no memory); refused where the float32
    weights alone exceed the machine's memory, named otherwise."""
    with torch.device("meta"):
        count = sum(p.numel() for p in AutoModelForCausalLM.from_config(hf_config).parameters())
    size = f"{count / 1e9:.2f}B parameters, {4 * count / 2**30:.1f} GiB in float32"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if 4 * count > memory:
        raise LMTrainError(
            f"model_type={model_type!r} with no config is transformers' default {model_type} "
            f"({size}), more than this machine's {memory / 2**30:.0f} GiB: pass config={{...}} "
            "with its size (the config of configs/model/llama_tiny.yaml, for one)"
        )
    log.info("model_type=%r with no config: transformers' default (%s)", model_type, size)


@contextmanager
def attention_backend(attn_implementation: str | None) -> Iterator[None]:
    """Turn transformers' refusal of `model.attn_implementation` into one line naming it.

    `flash_attention_2` without the flash-attn package (any CPU machine) is an ImportError, an
    unknown name or one the architecture lacks (`flex_attention` for GPT-2) a ValueError; both
    come when the model is built, after data preparation. Errors that do not mention the
    attention (another missing package, another bad value) pass through.
    """
    try:
        yield
    except (ImportError, ValueError) as err:
        if not any(word in str(err) for word in ATTENTION_WORDS):
            raise
        # Never the value that failed: bloom and others have no sdpa path, only eager.
        advice = (
            "pass model.attn_implementation=eager (this architecture has no sdpa path)"
            if attn_implementation == "sdpa"
            else "pass model.attn_implementation=sdpa (or eager), or install what it needs"
        )
        raise LMTrainError(
            f"model.attn_implementation={attn_implementation!r} cannot be used here "
            f"({first_line(err)}): {advice}"
        ) from err


def embedding_size(configured: int | None, tokenizer_size: int) -> int:
    """A fresh model's embedding rows: the tokenizer's size, or a bigger model.config.vocab_size.

    A bigger one is kept (rows padded to a multiple of 64 run faster on GPUs, as nanoGPT's 50304);
    a smaller one could not embed the tokenizer's ids and is refused.
    """
    if configured is None:
        return tokenizer_size
    if configured < tokenizer_size:
        raise LMTrainError(
            f"model.config.vocab_size={configured} is smaller than the tokenizer's "
            f"{tokenizer_size} tokens: remove model.config.vocab_size (it then comes from the "
            f"tokenizer) or set it to at least {tokenizer_size}"
        )
    return int(configured)


def _load_pretrained(
    pretrained: str,
    attn_implementation: str | None,
    vocab_size: int | None,
    frozen_base: bool,
    model_type: str | None = None,
    config: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """`model.pretrained` in float32 when its weights train, so that `trainer.precision` decides
    (bf16-mixed autocasts): in its saved dtype (transformers' default, bf16 for most hub models)
    AdamW rounded away the updates smaller than bf16's precision even under 32-true. A LoRA
    base (`frozen_base`) is never updated: it keeps its saved dtype, half the memory of float32
    for a bf16 model, and peft keeps the adapters in float32. `model_type` and `config`: checked
    against config.json, and the overrides of `config` applied to it (`overridden_config`)."""
    subject = f"model.pretrained={pretrained!r}"
    local = Path(pretrained).expanduser()
    looks_local = names_local_path(pretrained) or local.exists()
    if looks_local and not (local / "config.json").is_file():
        if (local / "adapter_config.json").is_file():
            raise LMTrainError(
                f"{subject} is a LoRA adapter export (adapter_config.json, no config.json): "
                "export the checkpoint again with lmtrain.export merge=true, or pass its base "
                "model as model.pretrained with model/peft=lora"
            )
        raise LMTrainError(
            f"{subject} is not a folder with config.json: pass a folder written by "
            "save_pretrained (or lmtrain.export) or a hub id"
        )
    overridden = overridden_config(pretrained, model_type, config)
    with attention_backend(attn_implementation):
        model = load_weights(
            str(local) if looks_local else pretrained,
            subject,
            advice="pass a folder written by save_pretrained (or lmtrain.export), or a hub id "
            "on a machine that can reach the hub",
            damaged="copy or download the whole folder again (its config.json and weights come "
            "from one save_pretrained)",
            dtype="auto" if frozen_base else torch.float32,
            attn_implementation=attn_implementation,
            **({"config": overridden} if overridden is not None else {}),
        )
    # from_pretrained hands back an eval-mode model; Lightning keeps each module's mode, so
    # without this, fine-tuning would run with dropout off.
    model.train()
    embeddings = model.get_input_embeddings().weight.shape[0]
    if vocab_size is not None and vocab_size > embeddings:
        own = folder_tokenizer_size(local) if looks_local else None
        if own is not None and own > embeddings:  # its own tokenizer would not fit either
            raise LMTrainError(
                f"{subject} holds a tokenizer of {own} tokens but embeds only {embeddings}: its "
                "tokenizer files and weights do not match; copy the whole folder again (tokenizer "
                "and weights from one save_pretrained or lmtrain.export), or use a data tokenizer "
                f"of at most {embeddings} tokens"
            )
        raise LMTrainError(
            f"the tokenizer has {vocab_size} tokens but {subject} embeds "
            f"only {embeddings}: use the model's own tokenizer (data.tokenizer.kind=pretrained "
            f"data.tokenizer.name={pretrained}), or a data tokenizer of at most {embeddings} tokens"
        )
    return model


def folder_tokenizer_size(folder: Path) -> int | None:
    """The number of tokens of the tokenizer saved in `folder`; None where it has none that
    loads (only asked of a folder already refused, to say which advice applies)."""
    try:
        return len(AutoTokenizer.from_pretrained(folder, trust_remote_code=False))
    except Exception:  # no tokenizer files, damaged ones: the general advice stands
        return None


def check_trainable_attention(attn_implementation: str | None, strategy: Any) -> None:
    """Refuse flex_attention for training on the CPU (`strategy`: the Trainer's, at setup),
    where PyTorch's FlexAttention has no backward: the first step's NotImplementedError was a
    traceback (its forward runs, so eval, generation and the sanity validation pass)."""
    if attn_implementation == "flex_attention" and strategy.root_device.type == "cpu":
        raise LMTrainError(
            "model.attn_implementation='flex_attention' cannot train on the CPU (PyTorch's "
            "FlexAttention has no backward there): pass model.attn_implementation=sdpa, or "
            "train on a GPU"
        )


def context_length(config: PretrainedConfig) -> int | None:
    """The longest sequence the model's position encoding covers (`n_positions` for GPT-2)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def check_context(
    config: PretrainedConfig, block_size: int, pretrained: bool = False, eval_key: str = ""
) -> None:
    """Fail before training when the data windows are longer than the model can attend over.
    `pretrained`: the model's context is its weights' (model.config may not change it);
    `eval_key`: a trained model's at eval (fixed too), whose block size is set with this key."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        # From a command, the config checks refuse it first; from a checkpoint's run config,
        # here (eval).
        raise LMTrainError(
            f"data.block_size={block_size!r} is not a positive whole number: pass "
            "data.block_size=<tokens per window>"
        )
    limit = context_length(config)
    if limit is not None and block_size > limit:
        fix = "lower data.block_size or raise the model's context"
        if pretrained:
            fix = f"lower data.block_size to at most {limit}, the context of model.pretrained"
        if eval_key:
            fix = f"pass {eval_key}={limit} or less (a trained model's context is fixed)"
        raise LMTrainError(
            f"data.block_size={block_size} is longer than the model's context ({limit}, "
            f"model.config.n_positions / max_position_embeddings): {fix}"
        )


def count_parameters(model: PreTrainedModel) -> dict[str, int]:
    """Total and trainable parameter counts (tied weights counted once), for the run config."""
    params = list(model.parameters())
    return {
        "params/total": sum(p.numel() for p in params),
        "params/trainable": sum(p.numel() for p in params if p.requires_grad),
    }


def decoder_blocks(model: PreTrainedModel) -> nn.ModuleList:
    """The model's stack of transformer blocks, found without naming the architecture.

    HF models list their block class in `_no_split_modules` (`GPT2Block`, `LlamaDecoderLayer`);
    the stack is the first ModuleList made of those. Without that hint, the longest ModuleList.
    """
    block_names = set(getattr(model, "_no_split_modules", None) or [])
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    for modules in lists:
        if all(type(block).__name__ in block_names for block in modules):
            return modules
    if not lists:
        raise LMTrainError(
            f"{type(model).__name__} has no list of blocks: set model.freeze.first_n_blocks=0"
        )
    return max(lists, key=len)


def freeze_parameters(
    model: PreTrainedModel, embeddings: bool = False, first_n_blocks: int = 0
) -> None:
    """Stop gradients to the embeddings and/or the first N blocks, for cheaper fine-tuning.

    Embeddings are the model's `nn.Embedding` tables (tokens, and learned positions for GPT-2);
    a tied output layer shares the token table, so it is frozen with it.
    """
    blocks = decoder_blocks(model) if first_n_blocks else None
    if blocks is not None and not 0 <= first_n_blocks <= len(blocks):
        raise LMTrainError(
            f"model.freeze.first_n_blocks={first_n_blocks} is out of range: the model has "
            f"{len(blocks)} blocks, pass 0 to {len(blocks)}"
        )
    if embeddings:
        for module in model.modules():
            if isinstance(module, nn.Embedding):
                module.requires_grad_(False)
    if blocks is not None:
        for block in blocks[:first_n_blocks]:
            block.requires_grad_(False)
