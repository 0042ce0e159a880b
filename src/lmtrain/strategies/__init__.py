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

from lmtrain.utils import import_env

# `python -m lmtrain.strategies` runs this file before its __main__, and the imports below load
# Lightning, which parses RANK and LOCAL_RANK as numbers: checked first, as every entry point
# does (lmtrain.utils.import_env); an import from Python ends with that line, not a traceback.
import_env.exit_on_unreadable_rank()

from lmtrain.strategies.consolidate import consolidate  # noqa: E402
from lmtrain.strategies.fsdp import FSDP2Strategy  # noqa: E402

__all__ = ["FSDP2Strategy", "consolidate"]
