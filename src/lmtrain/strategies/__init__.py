"""Training strategies of our own: `trainer=fsdp` (FSDP2, `torch.distributed.fsdp.fully_shard`,
through Lightning's `ModelParallelStrategy`) and its sharded checkpoints.

- `fsdp`: `FSDP2Strategy`, which shards each transformer block and then the root, with mixed
  precision, and loads pretrained weights on rank 0 only.
- `sharded_checkpoints`: checkpoint folders written atomically, read through the restricted
  reader of `lmtrain.utils.safe_load`, and one-file checkpoints (DDP, one device) read into a
  sharded model.
- `consolidate`: a sharded folder into the one `.ckpt` file that eval, generate, export and a
  one-device `trainer.fit` read: `python -m lmtrain.strategies consolidate <folder>`.
"""

from lmtrain.strategies.consolidate import consolidate
from lmtrain.strategies.fsdp import FSDP2Strategy

__all__ = ["FSDP2Strategy", "consolidate"]
