"""Find, check and load lmtrain checkpoints outside of training (eval, generate, export).

Lightning restores a checkpoint into a running Trainer; these helpers cover the rest: turning
`ckpt_path=last` into a file, refusing a missing or corrupt file with one clear line before any
work starts, and rebuilding the plain HF model and tokenizer that a checkpoint carries.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lmtrain.errors import LMTrainError
from lmtrain.models.module import CHECKPOINT_KEY


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path) -> str | None:
    """`last` means this run folder's `checkpoints/last.ckpt`; any other value must be a file.

    Lightning itself would silently start from scratch when `last` finds nothing; a researcher
    who asked to resume wants to hear that instead.
    """
    if not ckpt_path:
        return None
    if ckpt_path == "last":
        path = Path(output_dir) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise LMTrainError(
                f"ckpt_path=last found no {path}: pass the run folder to resume with "
                "hydra.run.dir=<run folder>, or ckpt_path=<file>"
            )
    else:
        path = Path(ckpt_path).expanduser()
        if not path.is_file():
            raise LMTrainError(f"ckpt_path={ckpt_path!r} does not exist: pass a .ckpt file")
    load_checkpoint(path)  # fail now, not after data preparation, if the file is broken
    return str(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint's tensors and plain values only (`weights_only=True`, memory-mapped)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LMTrainError(
            f"ckpt_path={str(path)!r} is not a readable checkpoint ({reason}): pass a .ckpt "
            "written by lmtrain.train, e.g. <run folder>/checkpoints/last.ckpt"
        ) from None


def model_from_checkpoint(
    path: str | Path,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Any]]:
    """The HF model with the checkpoint's weights, its tokenizer, and the run's config."""
    checkpoint = load_checkpoint(path)
    extra = checkpoint.get(CHECKPOINT_KEY)
    if not extra:
        raise LMTrainError(
            f"ckpt_path={str(path)!r} was not written by lmtrain.train: no model config"
        )
    config_dict = dict(extra["hf_config"])
    config = AutoConfig.for_model(config_dict.pop("model_type"), **config_dict)
    model = AutoModelForCausalLM.from_config(config)
    prefix = "model."
    state = {
        k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)
    }
    model.load_state_dict(state)
    model.eval()
    return model, tokenizer_from_files(extra["tokenizer_files"]), extra.get("run_config") or {}


def tokenizer_from_files(files: dict[str, str]) -> PreTrainedTokenizerBase:
    """Rebuild a tokenizer from the file contents `save_pretrained` wrote."""
    with tempfile.TemporaryDirectory() as folder:
        for name, text in files.items():
            (Path(folder) / name).write_text(text)
        return AutoTokenizer.from_pretrained(folder)
