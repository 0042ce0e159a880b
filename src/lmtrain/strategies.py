"""FSDP for any Hugging Face causal LM, and sharded checkpoints back to one file.

FSDP shards well when each transformer block is its own unit. Hugging Face names the block class
of every model in `_no_split_modules` (the classes `device_map` must not cut through:
`GPT2Block`, `LlamaDecoderLayer`, ...), so the wrap policy is read from the model class instead of
being written per architecture. The same classes are the natural unit for activation
checkpointing. Everything else (mixed precision, sharded state dicts, the process launch) is
Lightning's FSDPStrategy.

    python -m lmtrain.strategies consolidate <run>/checkpoints/last.ckpt [--output FILE]

turns a sharded checkpoint folder (`trainer.strategy.state_dict_type=sharded`) into the single
`.ckpt` file that `lmtrain.eval`, `lmtrain.generate` and `lmtrain.export` read.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from lmtrain.errors import LMTrainError
from lmtrain.lightning_compat import format_consolidated_checkpoint
from lmtrain.models.checkpoint import SHARDED_META_FILE
from lmtrain.utils.io import atomic_write
from lmtrain.utils.safe_load import load_dcp_folder, load_torch_file

SHARDING_STRATEGIES = ("FULL_SHARD", "SHARD_GRAD_OP", "HYBRID_SHARD", "NO_SHARD")
STATE_DICT_TYPES = ("full", "sharded")


def block_classes(model_type: str | None = None, pretrained: str | None = None) -> set[type]:
    """The transformer-block classes of the causal LM `model_type` (or of the `pretrained` one).

    Read from the model class's `_no_split_modules` without building the model, so the strategy
    can be made before the weights exist (and before they are loaded on the right device).
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if pretrained:
        try:
            model_type = AutoConfig.from_pretrained(pretrained).model_type
        except (OSError, ValueError) as err:
            raise LMTrainError(
                f"model.pretrained={pretrained!r} has no readable config ({err}): pass a folder "
                "with config.json, or a hub id on a machine that can reach the hub"
            ) from None
    class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type or "")
    if class_name is None:
        raise LMTrainError(
            f"model.model_type={model_type!r} is not a transformers causal LM: FSDP needs its "
            "block class; use gpt2, llama or another AutoModelForCausalLM type"
        )
    import transformers

    model_class = getattr(transformers, class_name)
    names = set(getattr(model_class, "_no_split_modules", None) or [])
    module = sys.modules[model_class.__module__]
    classes = {
        obj
        for name, obj in inspect.getmembers(module, inspect.isclass)
        if name in names and issubclass(obj, nn.Module)
    }
    if not classes:
        raise LMTrainError(
            f"{class_name} names no block class in _no_split_modules: FSDP cannot wrap it per "
            "block; use trainer=ddp"
        )
    return classes


def fsdp_strategy(
    model_type: str | None = None,
    pretrained: str | None = None,
    sharding_strategy: str = "FULL_SHARD",
    activation_checkpointing: bool = False,
    state_dict_type: str = "full",
    cpu_offload: bool = False,
    **kwargs: Any,
) -> FSDPStrategy:
    """Lightning's FSDPStrategy wrapping (and optionally checkpointing) each transformer block.

    Only the blocks become FSDP units: the embeddings and output layer stay in the root unit,
    together, so a tied output layer keeps sharing the embedding table's parameter. `kwargs` go
    to FSDPStrategy (e.g. `process_group_backend`, `limit_all_gathers`).
    """
    if sharding_strategy not in SHARDING_STRATEGIES:
        raise LMTrainError(
            f"trainer.strategy.sharding_strategy={sharding_strategy!r} is unknown: use one of "
            f"{', '.join(SHARDING_STRATEGIES)}"
        )
    if state_dict_type not in STATE_DICT_TYPES:
        raise LMTrainError(
            f"trainer.strategy.state_dict_type={state_dict_type!r} is unknown: use full or sharded"
        )
    blocks = block_classes(model_type, pretrained)
    return FSDPStrategy(
        auto_wrap_policy=blocks,
        activation_checkpointing_policy=blocks if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        cpu_offload=cpu_offload,
        **kwargs,
    )


def consolidate(folder: str | Path, output: str | Path | None = None) -> Path:
    """Merge a sharded FSDP checkpoint folder into one `.ckpt` file; return its path.

    The file has the layout of a full checkpoint (`state_dict`, `optimizer_states`, and the
    lmtrain extras the module adds), so every lmtrain tool and `trainer.fit(ckpt_path=...)` load
    it. `output` defaults to `<folder>.consolidated.ckpt` beside the folder (for `last.ckpt/`,
    `last.consolidated.ckpt`). Runs in one process on CPU: it needs memory for the whole model,
    not the GPUs that wrote it.
    """
    folder = Path(folder).expanduser()
    if not (folder.is_dir() and (folder / SHARDED_META_FILE).is_file()):
        raise LMTrainError(
            f"{str(folder)!r} is not a sharded checkpoint folder (no {SHARDED_META_FILE}): pass "
            "a checkpoint written with trainer.strategy.state_dict_type=sharded"
        )
    if output is None:
        stem = folder.name.removesuffix(".ckpt")
        output = folder.with_name(f"{stem}.consolidated.ckpt")
    output = Path(output).expanduser()
    meta = load_torch_file(folder / SHARDED_META_FILE)  # all but the tensors; small, so first
    checkpoint = load_dcp_folder(folder)  # {"model": ..., "optimizer_0": ...}, as FSDP saved it
    if "model" not in checkpoint or not isinstance(meta, dict):
        raise LMTrainError(
            f"{str(folder)!r} is not a Lightning FSDP checkpoint (no model entry, or a "
            f"{SHARDED_META_FILE} that is not a dict): pass a checkpoint written with "
            "trainer.strategy.state_dict_type=sharded"
        )
    checkpoint = format_consolidated_checkpoint({**checkpoint, **meta})
    with atomic_write(output, "wb") as f:  # a reader never sees half a checkpoint
        torch.save(checkpoint, f)
    return output


def main(argv: list[str] | None = None) -> None:
    """`python -m lmtrain.strategies consolidate <folder> [--output FILE]`."""
    parser = argparse.ArgumentParser(prog="python -m lmtrain.strategies", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("consolidate", help="sharded FSDP checkpoint folder -> one .ckpt")
    merge.add_argument("folder", help="a sharded checkpoint, e.g. <run>/checkpoints/last.ckpt")
    merge.add_argument("--output", help="the file to write (default: <name>.consolidated.ckpt)")
    args = parser.parse_args(argv)
    try:
        path = consolidate(args.folder, args.output)
    except LMTrainError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(path)


if __name__ == "__main__":
    main()
