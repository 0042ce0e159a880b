"""Only global rank 0 writes a run's record, `<run folder>/.hydra/`.

Lightning's own DDP launcher starts its ranks > 0 with `hydra.output_subdir=null`
(lightning.fabric's subprocess_script launcher). torchrun, srun and Lightning's launcher on each
node start every process as a Hydra run of its own, and each wrote `.hydra/` into the one run
folder: in a new folder a rank > 0 wrote it first, rank 0 then took the folder for one holding an
earlier run's record and kept a byte-identical copy in `.hydra/previous/<time>/`, as if this were
a resumed run (red team). The ResumeRun callback, which already chooses who writes the record
before Hydra writes it, gives these ranks Lightning's `hydra.output_subdir=null` too.
"""

from __future__ import annotations

import contextlib

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, read_write

from lmtrain.utils.launch import set_rank_from_node


def global_rank(config: DictConfig) -> int:
    """This process's global rank before Lightning sets it: torchrun's RANK and srun's
    SLURM_PROCID are read by Lightning at import; a node's first process under Lightning's
    launcher across nodes learns it from NODE_RANK (`set_rank_from_node`)."""
    # A NODE_RANK that is no number: ClaimRunFolder refuses it next, in one line.
    with contextlib.suppress(TypeError, ValueError):
        set_rank_from_node(config)
    return int(getattr(rank_zero_only, "rank", 0))


def leave_record_to_rank_zero(config: DictConfig) -> None:
    """Hydra writes no `.hydra/` in a process of global rank > 0 (`config`: the one Hydra is
    about to run, in `on_run_start`)."""
    if global_rank(config) > 0:
        with read_write(config):
            config.hydra.output_subdir = None
