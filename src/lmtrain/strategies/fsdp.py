"""`FSDP2Strategy`: fully sharded data parallel (`torch.distributed.fsdp.fully_shard`) for any
Hugging Face causal LM, through Lightning's `ModelParallelStrategy`.

Every rank holds a shard of each parameter, gradient and optimizer state (dim 0 split over the
ranks, as DTensors that keep the full shape and names). Each transformer block is its own FSDP
unit, all-gathered just before its forward and backward; the root unit holds the rest (token and
position embeddings, the final norm, the output layer), so a tied output layer stays one
parameter with the token table. The block class is the one HF lists in `_no_split_modules`
(`GPT2Block`, `LlamaDecoderLayer`, ...), so no architecture is named here.

Lightning calls `CausalLMModule.configure_model`, which calls `shard`. The whole world is one
data-parallel group: every rank reads its own windows (no tensor parallelism). Gradients are
reduce-scattered (averaged) after every micro-batch, also within gradient accumulation: Lightning
skips the sync only for DDP, and holding unsharded gradients between micro-batches would cost
DDP's memory. (The gloo AVG bug pytorch#162338 does not show on torch 2.13: two gloo ranks train
as one process does, tests/test_fsdp2.py.)

Checkpoints are DCP folders written atomically with a checksum of each file, checked and read
without unpickling; a one-file checkpoint (DDP, one device, a consolidated folder) resumes here
too (`lmtrain.strategies.sharded_checkpoints`).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.api import CheckpointException
from transformers import PreTrainedModel

from lmtrain.errors import LMTrainError, RankAgreedError, find_cause
from lmtrain.lightning_compat import make_every_rank_data_parallel
from lmtrain.models.checkpoint_paths import temporary_sharded
from lmtrain.models.hf import decoder_blocks
from lmtrain.strategies.sharded_checkpoints import (
    load_full_file,
    load_sharded,
    remove_path,
    replace_folder,
    write_sharded,
)
from lmtrain.utils.checkpoint_io import checkpoint_full_disk_error
from lmtrain.utils.checks import Problems
from lmtrain.utils.strategy_checks import backend_problems

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FSDP2Strategy(ModelParallelStrategy):
    """Shards the model over all ranks, block by block; atomic, safely read checkpoints."""

    def __init__(
        self,
        param_dtype: str | None = None,
        reduce_dtype: str | None = None,
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        process_group_backend: str | None = None,
        timeout_s: float = 1800.0,
    ) -> None:
        """`param_dtype`: the dtype blocks compute in (weights are all-gathered in it; the
        sharded master weights and the optimizer state stay float32); `reduce_dtype`: the dtype
        gradients are reduced in; null keeps the parameter's (float32). `reshard_after_forward`:
        free the gathered weights after each block's forward (ZeRO-3; false keeps them until the
        backward, ZeRO-2-like: less communication, more memory). `activation_checkpointing`:
        recompute each block's activations in the backward pass. `timeout_s`: how long a
        collective waits for the other ranks before the run fails.

        Every value is checked here, in the launching process, before any rank starts or any
        process group forms: a value Lightning or torch refuses later fails there with a
        traceback on every rank (or, for a negative timeout, a socket timeout)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        problems = Problems()
        problems.boolean("trainer.strategy.reshard_after_forward", reshard_after_forward)
        problems.boolean("trainer.strategy.activation_checkpointing", activation_checkpointing)
        problems.number("trainer.strategy.timeout_s", timeout_s, low=0, low_open=True)
        problems.extend(backend_problems(process_group_backend))
        problems.raise_if_any()
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=True,
            process_group_backend=process_group_backend,
            timeout=timedelta(seconds=timeout_s),
        )
        self.mp_policy = MixedPrecisionPolicy(
            param_dtype=_dtype("param_dtype", param_dtype),
            reduce_dtype=_dtype("reduce_dtype", reduce_dtype),
        )
        self.reshard_after_forward = reshard_after_forward
        self.activation_checkpointing = activation_checkpointing

    def setup_environment(self) -> None:
        make_every_rank_data_parallel(self)  # Lightning's "auto": one data-parallel rank a node
        super().setup_environment()

    # -- sharding ------------------------------------------------------------------------------
    def shard(self, model: PreTrainedModel, compile_blocks: bool = False) -> None:
        """Make `model` fully sharded: each block an FSDP unit, then the root (in place).

        Runs once (Lightning calls configure_model again for validate). In the order torchtitan
        uses: activation checkpointing, `torch.compile` of each block (in place, so parameter
        names stay clean; compiling the whole model would break its graph at every unit), the
        blocks, the root. A model built on the meta device (model.pretrained, ranks > 0: see
        CausalLMModule) gets its weights from rank 0 afterwards.
        """
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if isinstance(model, FSDPModule):
            return
        mesh = self.device_mesh["data_parallel"]  # the 2-D mesh would mean HSDP: no sharding
        full_state = self._rank0_full_state(model)
        if self.activation_checkpointing:
            model.gradient_checkpointing_enable({"use_reentrant": False})
        blocks = decoder_blocks(model)
        for index, block in enumerate(blocks):
            if compile_blocks:
                block.compile()
            # The last block's weights would be gathered again at once for the backward.
            last = index == len(blocks) - 1
            reshard = self.reshard_after_forward and not last
            fully_shard(block, mesh=mesh, mp_policy=self.mp_policy, reshard_after_forward=reshard)
        fully_shard(model, mesh=mesh, mp_policy=self.mp_policy)
        if full_state is not None:
            self._broadcast_weights(model, full_state)

    def _rank0_full_state(self, model: PreTrainedModel) -> dict[str, torch.Tensor] | None:
        """Rank 0's full state dict when some rank built the model on the meta device (to send
        from after sharding), an empty dict on the other ranks, None when no rank did."""
        on_meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
        flag = torch.tensor([float(on_meta)], device=self.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not flag.item():
            return None
        assert not (self.global_rank == 0 and on_meta), "rank 0 builds the model it sends"
        return model.state_dict() if self.global_rank == 0 else {}

    def _broadcast_weights(self, model: PreTrainedModel, full_state: dict[str, Any]) -> None:
        """Allocate the local shards of the ranks that built on the meta device and fill every
        rank's from rank 0's full tensors, one tensor at a time; then rank 0's buffers (a
        non-persistent one, such as a rotary `inv_freq`, is in no state dict)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            model.to_empty(device=self.root_device)
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model, full_state, options=options)
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
        output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
        tied = model.config.tie_word_embeddings and output is not None
        assert not tied or output.weight is embeddings.weight, "the tied output layer came apart"

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        """Every rank writes its shards into `.<name>.tmp` and hashes them, then rank 0 renames
        it into place after a barrier: a kill at any moment leaves the previous checkpoint whole."""
        if storage_options is not None:  # as Lightning's ModelParallelStrategy refuses them
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        path = Path(self.broadcast(str(filepath)))
        tmp = temporary_sharded(path)
        if self.global_rank == 0:
            remove_path(tmp)  # left by a save that was killed
        self.barrier()
        try:
            write_sharded(checkpoint, tmp, path, self.global_rank)
        except BaseException as err:  # DCP gathers the ranks' failures in a BaseException
            # Every rank raises it together; rank 0's meta.pt, written after, fails alone.
            agreed = find_cause(err, CheckpointException) is not None
            kind = RankAgreedError if agreed else LMTrainError
            if (refusal := checkpoint_full_disk_error(path, err, kind)) is None:
                raise
            if self.global_rank == 0:
                remove_path(tmp)
            raise refusal from None
        self.barrier()  # every shard, the .metadata and meta.pt are on disk
        if self.global_rank == 0:
            self.before_replace(tmp, path)
            replace_folder(tmp, path)
        self.barrier()

    def before_replace(self, tmp: Path, target: Path) -> None:
        """Called on rank 0 with the complete folder `tmp`, just before it replaces `target`.

        Does nothing; tests override it to kill a run at the worst moment of a save.
        """

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        """A sharded folder written on any number of ranks, or one file (DDP, one device, a
        consolidated folder), into the sharded model and optimizer; returns the rest."""
        path = Path(self.broadcast(str(checkpoint_path)))
        assert self.model is not None and self.lightning_module is not None
        strict = self.lightning_module.strict_loading
        if path.is_dir():
            return load_sharded(self.model, self.optimizers, path, strict)
        return load_full_file(self.model, self.optimizers, path, strict)


def _dtype(key: str, name: str | None) -> torch.dtype | None:
    if name is None:
        return None
    if name not in DTYPES:
        raise LMTrainError(
            f"trainer.strategy.{key}={name!r} is unknown: use one of {', '.join(DTYPES)}, or null"
        )
    return DTYPES[name]
