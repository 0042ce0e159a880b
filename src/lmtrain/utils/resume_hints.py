"""How to resume from a checkpoint: the end of every line that stops a run with one saved.

Here in the utils layer, below the checkpoint writer (`lmtrain.utils.checkpoint_io`) and the
models that name it, so that each imports it downwards.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from lmtrain.utils.outside_checkpoints import inside


def resume_hint(path: Path) -> str:
    """How to resume from `path`, the last.ckpt `ckpt_path=last` finds or any other file. A
    sweep's job (or a run already resumed so) resumes with `resume=<its folder>`, which restores
    its settings: the sweep's command line with `ckpt_path=last` lacks them (another model)."""
    run = last_of_run(path)
    if run is None:
        return f"resume with ckpt_path={path}"
    if HydraConfig.initialized() and (
        HydraConfig.get().mode == RunMode.MULTIRUN
        or any(str(o).split("=", 1)[0] == "resume" for o in HydraConfig.get().overrides.task)
    ):
        return f"resume with resume={run}"
    return f"resume with ckpt_path=last hydra.run.dir={run}"


def last_of_run(path: Path) -> Path | None:
    """The run folder whose `ckpt_path=last` is `path`, if any: its checkpoints/last.ckpt, or
    under Hydra a last.ckpt outside this run's folder (a checkpoint dirpath on scratch storage,
    which a folder named checkpoints/ does not make the run folder's)."""
    if path.name != "last.ckpt":
        return None
    if not HydraConfig.initialized():
        return path.parent.parent if path.parent.name == "checkpoints" else None
    run = Path(HydraConfig.get().runtime.output_dir)
    if path == run / "checkpoints" / "last.ckpt" or not inside(run, path):
        return run
    return None
