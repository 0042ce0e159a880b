"""Which layers LoRA adapts (`model.peft.target_modules`), checked before peft sees them.

peft fails only when no entry matches and silently skips the others, and it adapts a tied output
layer (GPT-2's `lm_head`, which shares its weight with `wte`) without a word: merging such an
adapter adds it to the shared weight, so the merged model was another model. Each entry is
checked here against the model's layers.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers.pytorch_utils import Conv1D

from lmtrain.errors import LMTrainError

# Every projection of the attention and the MLP, as the LoRA and QLoRA papers found best.
DEFAULT_TARGETS = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# Other architectures: peft's shorthand for every Linear/Conv1D layer but the output layer.
ALL_LINEAR = "all-linear"
# The layers peft's LoRA adapts (a target module naming anything else is refused by peft).
ADAPTABLE = (nn.Linear, Conv1D, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def resolve_targets(model: nn.Module, targets: list[str] | str | None) -> list[str] | str:
    """The target modules (None: the architecture's defaults), each checked to adapt a layer
    that is not a tied embedding. A string is peft's regular expression for whole names."""
    if targets is None:
        targets = DEFAULT_TARGETS.get(model.config.model_type, ALL_LINEAR)
    targets = targets if isinstance(targets, str) else list(targets)
    if targets == ALL_LINEAR:
        return targets
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    if isinstance(targets, str):
        check_expression(model, targets)
    adaptable = [name for name, m in model.named_modules() if isinstance(m, ADAPTABLE)]
    tied = tied_embeddings(model)
    untied = [name for name in adaptable if name not in tied]

    def matching(config: LoraConfig) -> list[str]:
        return [name for name in adaptable if check_target_module_exists(config, name)]

    for target in [targets] if isinstance(targets, str) else targets:
        if not matching(
            LoraConfig(target_modules=target if isinstance(targets, str) else [target])
        ):
            # Suggested: layers LoRA adapts and that are no tied embedding (both are refused).
            linear = (n for n, m in model.named_modules() if isinstance(m, nn.Linear | Conv1D))
            names = ", ".join(dict.fromkeys(n.rsplit(".", 1)[-1] for n in linear if n in untied))
            as_list = set(matching(LoraConfig(target_modules=[target]))) & set(untied)
            regex = (
                f" (a string is a regular expression for whole names: pass a list, [{target}])"
                if isinstance(targets, str) and as_list
                else ""
            )
            raise LMTrainError(
                f"model.peft.target_modules: {target!r} matches no layer of this "
                f"{model.config.model_type} model that LoRA adapts{regex}: use its Linear/Conv1D "
                f"layers ({names}), or null for the architecture's defaults"
            )
    return targets


def all_linear_layers(model: nn.Module) -> list[str]:
    """The layers peft adapts for 'all-linear', by their full names, as its adapter_config.json
    lists them: every Linear/Conv1D layer but the output layer."""
    output = model.get_output_embeddings()
    linear = (nn.Linear, Conv1D)
    return [n for n, m in model.named_modules() if isinstance(m, linear) and m is not output]


def adapted_layers(model: nn.Module, targets: list[str]) -> set[str]:
    """The full names of the layers a list of target names adapts, as peft matches them (a
    short name, `c_attn`, every layer of that name)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=list(targets))
    return {n for n, _ in model.named_modules() if n and check_target_module_exists(config, n)}


def check_expression(model: nn.Module, expression: str) -> None:
    """Refuse a regular expression that matches a module LoRA cannot adapt (a LayerNorm, a whole
    block): peft adapts every module it matches, and for such a one refused the whole model
    with a ValueError, reported as the model's refusal of its settings."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=expression)
    matched = [
        (n, m) for n, m in model.named_modules() if n and check_target_module_exists(config, n)
    ]
    refused = [(name, module) for name, module in matched if not isinstance(module, ADAPTABLE)]
    if not refused:
        return
    kept = dict.fromkeys(name.rsplit(".", 1)[-1] for name, m in matched if isinstance(m, ADAPTABLE))
    name, module = refused[0]
    more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
    instead = f"pass a list ([{','.join(kept)}])" if kept else "pass a list of its Linear layers"
    raise LMTrainError(
        f"model.peft.target_modules={expression!r} matches {name} ({type(module).__name__}){more}, "
        f"which LoRA cannot adapt: narrow the expression, or {instead}"
    )


def check_untied_targets(model: nn.Module, targets: list[str] | str) -> None:
    """Refuse targets that adapt a tied embedding layer, before training: merged (the export's
    default), such an adapter changes the shared weight, so the export is another model."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    config = LoraConfig(target_modules=targets)
    tied = tied_embeddings(model)
    if shared := [name for name in tied if check_target_module_exists(config, name)]:
        raise LMTrainError(
            f"model.peft.target_modules={targets!r} adapts {', '.join(shared)}, which shares "
            "its weight with the other embedding layer (tie_word_embeddings): merged, the "
            "adapter would change both, and the export would be another model: drop it from "
            "the targets"
        )


def adapted_tied_layers(model: Any) -> list[str]:
    """The tied embedding layers of a PeftModel that carry adapters (checkpoints trained
    before `check_untied_targets`): they export with `merge=false` only."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    modules = dict(base.named_modules())
    return [name for name in tied_embeddings(base) if isinstance(modules[name], LoraLayer)]


def tied_embeddings(model: Any) -> list[str]:
    """The names of the input and output embedding layers when they share one weight."""
    inputs, outputs = model.get_input_embeddings(), model.get_output_embeddings()
    if inputs is None or outputs is None or inputs.weight is not outputs.weight:
        return []
    return [name for name, module in model.named_modules() if module in (inputs, outputs)]
