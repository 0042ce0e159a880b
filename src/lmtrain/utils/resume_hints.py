"""How to resume from a checkpoint: the end of every line that stops a run with one saved.

Here in the utils layer, below the checkpoint writer (`lmtrain.utils.checkpoint_io`) and the
models that name it, so that each imports it downwards.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def resume_hint(path: Path) -> str:
    """How to resume from `path`, a run folder's checkpoints/last.ckpt or any other file. A
    sweep's job (or a run already resumed so) resumes with `resume=<its folder>`, which restores
    its settings: the sweep's command line with `ckpt_path=last` lacks them (another model)."""
    if path.name == "last.ckpt" and path.parent.name == "checkpoints":
        if HydraConfig.initialized() and (
            HydraConfig.get().mode == RunMode.MULTIRUN
            or any(str(o).split("=", 1)[0] == "resume" for o in HydraConfig.get().overrides.task)
        ):
            return f"resume with resume={path.parent.parent}"
        return f"resume with ckpt_path=last hydra.run.dir={path.parent.parent}"
    return f"resume with ckpt_path={path}"
