"""What `CausalLMModule.on_load_checkpoint` does before Lightning loads a checkpoint's state into
it: from a Trainer (`trainer.fit(..., ckpt_path=...)`, `trainer.validate(..., ckpt_path=...)`) or
from `CausalLMModule.load_from_checkpoint`.

From Python no config check compares the checkpoint's model with the module's, as the command
line does (`lmtrain.models.checkpoint.check_same_model`): another size ended in torch's
multi-line "Error(s) in loading state_dict". And a module whose inner model was compiled
(`module.model = torch.compile(module.model)`) saves names with torch.compile's `_orig_mod.`,
which an uncompiled module refused as another tool's file (`load_model` and export strip it).
And a resumed fit whose optimizer is not the checkpoint's kind (one optimizer for a checkpoint
of `OptimizerParts`) failed inside torch's load_state_dict with KeyError 'param_groups'; one
whose optimizer state does not fit the module's optimizer crashed the fit (a segfault in the
fused AdamW, or torch's ValueError): `lmtrain.models.optimizer_state_checks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch import LightningModule

from lmtrain.errors import LMTrainError
from lmtrain.models import lora
from lmtrain.models.checkpoint_contents import CHECKPOINT_KEY, model_differences
from lmtrain.models.checkpoint_extras import restore_counters
from lmtrain.models.optimizer_state_checks import check_optimizer_state
from lmtrain.models.optimizers import OptimizerParts

# What torch.compile's wrapper (OptimizedModule) adds to the names of the module it wraps.
COMPILED = "_orig_mod."


def prepare_load(module: LightningModule, checkpoint: dict[str, Any], trainer: Any) -> None:
    """A LoRA checkpoint must fit the module's base and adapters; one of another model is
    refused (`trainer`: the module's, None under load_from_checkpoint, whose own arguments
    build the checkpoint's model); the state's names are the module's, compiled or not; a
    resumed fit goes on from the checkpoint's counters (load_from_checkpoint: a new fit counts
    its own), and its optimizer state must fit the optimizer this module builds (a tensor of
    another shape ran the fused AdamW out of bounds: optimizer_state_checks)."""
    lora.check_resume(module, checkpoint, (module.run_config or {}).get("ckpt_path"))
    match_compiled_names(module, checkpoint)
    if trainer is not None:
        check_same_architecture(module, checkpoint, trainer.ckpt_path)
        if trainer.state.fn == "fit":  # only a fit restores the optimizer's state
            check_same_optimizer_kind(module, checkpoint, trainer.ckpt_path)
            check_optimizer_state(module, checkpoint, trainer.ckpt_path)
        restore_counters(module, checkpoint)


def match_compiled_names(module: LightningModule, checkpoint: dict[str, Any]) -> None:
    """Rename the state's entries to the module's own names, with or without `_orig_mod.`:
    a checkpoint of a compiled inner model loads into a plain one, and the other way round."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping) or not state:
        return
    own = {name.replace(COMPILED, ""): name for name in module.state_dict(keep_vars=True)}
    if not any(COMPILED in key for key in state) and all(k == v for k, v in own.items()):
        return  # neither side compiled: the names are already the module's
    checkpoint["state_dict"] = {
        own.get(key.replace(COMPILED, ""), key): value for key, value in state.items()
    }


def check_same_architecture(
    module: LightningModule, checkpoint: Mapping[str, Any], ckpt_path: Any
) -> None:
    """The command line's `check_same_model`, for a module built from Python: the checkpoint's
    recorded HF config against the module's model, in one line naming what differs."""
    saved = (checkpoint.get(CHECKPOINT_KEY) or {}).get("hf_config")
    if not isinstance(saved, Mapping):
        return  # not ours: left to Lightning
    differences = model_differences(dict(saved), module.model.config.to_dict())
    if not differences:
        return
    listed = ", ".join(f"{k}={a!r} in the checkpoint but {b!r} here" for k, a, b in differences)
    keys = {key for key, _, _ in differences}
    hint = " (vocab_size comes from the tokenizer)" if "vocab_size" in keys else ""
    settings = ", ".join(f"{k}={a!r}" for k, a, _ in differences)
    raise LMTrainError(
        f"ckpt_path={str(ckpt_path)!r} holds another model: {listed}: resume with the "
        f"checkpoint's model settings (CausalLMModule(model_type=..., config={{...}}) with "
        f"{settings}){hint}, or drop ckpt_path to start from scratch"
    )


def check_same_optimizer_kind(
    module: LightningModule, checkpoint: Mapping[str, Any], ckpt_path: Any
) -> None:
    """A checkpoint of an `OptimizerParts` run (its optimizer state: one torch state per part)
    resumed with one optimizer: refused in one line, as `CombinedOptimizer.load_state_dict`
    refuses the other way round."""
    states = checkpoint.get("optimizer_states")
    if not isinstance(states, list) or not states or not isinstance(states[0], Mapping):
        return
    state = states[0]
    parts = [k for k, v in state.items() if isinstance(v, Mapping) and "param_groups" in v]
    if "param_groups" in state or not parts or len(parts) != len(state):
        return  # one optimizer's state (or not ours): Lightning loads it
    if isinstance(getattr(module, "optimizer_factory", None), OptimizerParts):
        return
    raise LMTrainError(
        f"ckpt_path={str(ckpt_path)!r} holds the optimizer states of parts {sorted(parts)} "
        "(OptimizerParts, model/optimizer=muon), not one optimizer's: resume with the "
        "optimizer config the checkpoint was trained with (optimizer=OptimizerParts(...) with "
        "those parts), or drop ckpt_path to start from scratch"
    )
