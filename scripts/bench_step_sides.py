"""The sides bench_model_step.py times: nanoGPT's GPT and HF's GPT-2 as lmtrain builds it (in
the variants of `VARIANTS`), each built fresh from one seed, and the raw training step they share.

Every side steps on the same windows with the same AdamW (lmtrain's configured one, weight decay
on >= 2-D weights only) and the same clipping, so that the step times differ only by the model
and by how it is called.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from lmtrain.models.distributed import decay_parameter_names
from lmtrain.models.hf import build_causal_lm
from lmtrain.models.optimizers import decay_groups

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Variant:
    """One way of running HF's GPT-2: the call, the loss and module-level choices."""

    call_kwargs: tuple[tuple[str, Any], ...] = ()
    loss: str = "ours"  # ours: F.cross_entropy on the logits; labels: HF's labels= path
    attn_implementation: str | None = None  # None: the composed config's
    strip_dropout: bool = False
    # torch.backends.mkldnn.matmul.fp32_precision while this side runs; None: torch's default
    fp32_matmul_precision: str | None = None


VARIANTS: dict[str, Variant] = {
    "hf": Variant(),
    "hf_no_cache": Variant(call_kwargs=(("use_cache", False),)),
    "hf_labels": Variant(loss="labels"),
    "hf_eager": Variant(attn_implementation="eager"),
    "hf_no_dropout": Variant(strip_dropout=True),
    "hf_tuple": Variant(call_kwargs=(("return_dict", False),)),
    "hf_best": Variant(
        call_kwargs=(("use_cache", False), ("return_dict", False)), strip_dropout=True
    ),
    "hf_bf16_matmul": Variant(call_kwargs=(("use_cache", False),), fp32_matmul_precision="bf16"),
}


def model_config(overrides: list[str]) -> dict[str, Any]:
    """The composed `model` node (model_type, config, attn_implementation, optimizer)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shakespeare_char", *overrides])
    return OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[return-value]


def strip_zero_dropout(model: nn.Module) -> None:
    """Swap every nn.Dropout(p=0) for nn.Identity, except GPT-2's attn_dropout: its `.p` is
    read by the attention and handed to SDPA."""
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout) and child.p == 0 and child_name != "attn_dropout":
                setattr(module, child_name, nn.Identity())


def build_hf(model_cfg: dict[str, Any], variant: Variant, vocab: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = build_causal_lm(
        model_cfg["model_type"],
        model_cfg["config"],
        model_cfg["pretrained"],
        variant.attn_implementation or model_cfg["attn_implementation"],
        vocab_size=vocab + 1,  # lmtrain's char tokenizer: the characters, then <|endoftext|>
        eos_token_id=vocab,
    )
    if variant.strip_dropout:
        strip_zero_dropout(model)
    return model.train()


def build_nanogpt(nanogpt_dir: Path, model_cfg: dict[str, Any], block: int, vocab: int, seed: int):
    if str(nanogpt_dir) not in sys.path:
        sys.path.insert(0, str(nanogpt_dir))
    from model import GPT, GPTConfig  # nanoGPT's model.py, imported from its checkout

    c = model_cfg["config"]
    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints its parameter count
        model = GPT(
            GPTConfig(
                block_size=block,
                vocab_size=vocab,
                n_layer=c["n_layer"],
                n_head=c["n_head"],
                n_embd=c["n_embd"],
                dropout=0.0,
                bias=True,
            )
        )
    return model.train()


def make_step(
    side: str, model: nn.Module, model_cfg: dict[str, Any]
) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.optim.Optimizer]:
    """The step function (windows -> loss, weights updated) and its optimizer."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = instantiate(model_cfg["optimizer"])(
        decay_groups(named, decay_parameter_names(model))
    )
    params = [p for _, p in named]
    loss_fn = loss_function(side, model)

    def step(windows: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(windows)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step, optimizer


def loss_function(side: str, model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Windows (batch, block + 1) -> mean next-token loss, as each side computes it."""
    if side == "nanogpt":
        # nanoGPT's get_batch hands over contiguous inputs and targets: split outside the step.
        split: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def nanogpt(w: torch.Tensor) -> torch.Tensor:
            if id(w) not in split:
                split[id(w)] = (w[:, :-1].contiguous(), w[:, 1:].contiguous())
            return model(*split[id(w)])[1]

        return nanogpt
    variant = VARIANTS[side]
    kwargs = dict(variant.call_kwargs)
    if variant.loss == "labels":
        # HF's idiom: labels are the inputs, shifted inside (one target fewer per row).
        def hf_loss(w: torch.Tensor) -> torch.Tensor:
            out = model(input_ids=w[:, :-1], labels=w[:, :-1], **kwargs)
            return out[0] if isinstance(out, tuple) else out.loss

        return hf_loss

    def ours(w: torch.Tensor) -> torch.Tensor:  # lmtrain's CausalLMModule.forward and .loss
        logits = hf_logits(model, w[:, :-1], kwargs)
        return F.cross_entropy(logits.flatten(0, 1).float(), w[:, 1:].flatten())

    return ours


def hf_logits(model: nn.Module, input_ids: torch.Tensor, kwargs: dict[str, Any]) -> torch.Tensor:
    out = model(input_ids=input_ids, **kwargs)
    return out[0] if isinstance(out, tuple) else out.logits


def build(side: str, args: argparse.Namespace, model_cfg: dict[str, Any]) -> nn.Module:
    if side == "nanogpt":
        return build_nanogpt(args.nanogpt, model_cfg, args.block, args.vocab, args.seed)
    return build_hf(model_cfg, VARIANTS[side], args.vocab, args.seed)


@contextlib.contextmanager
def fp32_matmul_precision(precision: str | None):
    """oneDNN's float32 matmul precision set to `precision` for the block (None: unchanged)."""
    if precision is None:
        yield
        return
    before = torch.backends.mkldnn.matmul.fp32_precision
    torch.backends.mkldnn.matmul.fp32_precision = precision
    try:
        yield
    finally:
        torch.backends.mkldnn.matmul.fp32_precision = before
