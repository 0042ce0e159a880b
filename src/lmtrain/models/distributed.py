"""What `CausalLMModule` does differently when its training is split over ranks.

- `model.pretrained` is read by global rank 0 only: the other ranks build the architecture on
  the meta device (`pretrained_on_meta`) and get the weights in `configure_model`, sent by rank 0
  under FSDP, read there under DDP.
- Under FSDP (a device mesh) the strategy shards the model (`shard`); the choice of the
  parameters that get weight decay is made before, on the unsharded model, by name.
- Under FSDP every rank runs as many val batches as the others, the short ones padded with
  windows of `PAD_TOKEN` (`lmtrain.data.windows`), which `lmtrain.models.metrics` weighs 0.
- A sharded checkpoint folder given to a strategy that reads files only is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from lmtrain.errors import RankAgreedError
from lmtrain.models.checkpoint import check_strategy_reads
from lmtrain.models.checkpoint_paths import locate_checkpoint
from lmtrain.models.pretrained_overrides import overridden_config
from lmtrain.utils.sharded_layout import is_sharded_checkpoint
from lmtrain.utils.strategy_checks import SKIP_UNDER_FSDP


def pretrained_on_meta(
    pretrained: str,
    attn_implementation: str | None,
    model_type: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """The architecture of model.pretrained on the meta device: no weights read, no memory;
    with `model.config`'s overrides (dropout, ...) as rank 0's model has them."""
    local = Path(pretrained).expanduser()
    name = str(local) if local.exists() else pretrained
    config = overridden_config(pretrained, model_type, overrides) or AutoConfig.from_pretrained(
        name,
        trust_remote_code=False,  # never a folder's code
    )
    with torch.device("meta"):  # float32, as rank 0 loads the weights (`models.pretrained`)
        model = AutoModelForCausalLM.from_config(
            config, attn_implementation=attn_implementation, dtype=torch.float32
        )
    return model.train()


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the parameters with 2 or more dimensions (embeddings, linear weights)."""
    return {name for name, p in model.named_parameters() if p.dim() >= 2}


def shards_models(strategy: Any) -> bool:
    """Whether `strategy` shards the model (`lmtrain.strategies.fsdp.FSDP2Strategy.shard`)."""
    return callable(getattr(strategy, "shard", None))


def shard(strategy: Any, model: PreTrainedModel, compile_blocks: bool, nan_guard: str) -> None:
    """Have the strategy (`lmtrain.strategies.fsdp.FSDP2Strategy`) shard `model`, or refuse."""
    if nan_guard == "skip":
        # A skipped micro-batch leaves its sharded forward without the backward FSDP waits
        # for, and the zero-gradient loss DDP uses would reach only this rank's shards.
        raise RankAgreedError(SKIP_UNDER_FSDP)
    if not shards_models(strategy):
        raise RankAgreedError(
            f"trainer.strategy={type(strategy).__name__} does not shard lmtrain's models: use "
            "trainer=fsdp (lmtrain.strategies.fsdp.FSDP2Strategy)"
        )
    strategy.shard(model, compile_blocks=compile_blocks)


def check_resume_strategy(run_config: dict[str, Any] | None, sharded_strategy: bool) -> None:
    """Refuse a sharded checkpoint folder for a strategy that reads files only, before
    Lightning fails to read it. lmtrain.train passes the checkpoint to `trainer.fit`, and
    Lightning names it only once loading has started: it is read from the run config."""
    ckpt_path = (run_config or {}).get("ckpt_path")
    if ckpt_path:
        path = locate_checkpoint(ckpt_path, run_config["paths"]["output_dir"])
        check_strategy_reads(path, sharded_strategy)
    # An FSDP run's folder, resumed on one device from its consolidated file: the first save
    # of last.ckpt, a file, met the sharded folder of that name (IsADirectoryError, red team).
    output_dir = ((run_config or {}).get("paths") or {}).get("output_dir")
    last = Path(str(output_dir)) / "checkpoints" / "last.ckpt"
    if output_dir and not sharded_strategy and is_sharded_checkpoint(last):
        raise RankAgreedError(
            f"{last} is a sharded checkpoint folder (trainer=fsdp wrote it), which this run's "
            "one-file saves cannot replace: go on in a new run folder (leave hydra.run.dir "
            "out, with ckpt_path=<the file>), or resume with trainer=fsdp"
        )
