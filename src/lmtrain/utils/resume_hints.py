"""How to resume from a checkpoint: the end of every line that stops a run with one saved.

Here in the utils layer, below the checkpoint writer (`lmtrain.utils.checkpoint_io`) and the
models that name it, so that each imports it downwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.utils.outside_checkpoints import inside
from lmtrain.utils.override_text import override_arg
from lmtrain.utils.unresolved_folder import as_typed


def resume_hint(path: Path, root_dir: str | Path | None = None) -> str:
    """How to resume from `path`, a run folder's checkpoints/last.ckpt or any other file. A
    sweep's job (or a run already resumed so) resumes with `resume=<its folder>`, which restores
    its settings: the sweep's command line with `ckpt_path=last` lacks them (another model).
    `root_dir`, the trainer's `default_root_dir`, names the run folder of a last.ckpt in a
    checkpoint dirpath outside it (`run_of_last`): `resume=` restores the run's dirpath, which
    `ckpt_path=last` needs typed again (a command without it found no checkpoint). Each path
    goes in as one shell argument Hydra reads back (`override_arg`): a folder with a space or
    a `,` is pasted as it is printed."""
    run = run_of_last(path, root_dir)
    if run is None:
        return f"resume with {override_arg('ckpt_path', path)}"
    if not inside(run, path):  # a dirpath elsewhere, which resume= finds from the run's config
        return f"resume with {override_arg('resume', run)}"
    if HydraConfig.initialized() and (
        HydraConfig.get().mode == RunMode.MULTIRUN
        or any(o.split("=", 1)[0] == "resume" for o in as_typed(HydraConfig.get().overrides.task))
    ):
        return f"resume with {override_arg('resume', run)}"
    return f"resume with ckpt_path=last {override_arg('hydra.run.dir', run)}"


def run_of_last(path: Path, root_dir: str | Path | None) -> Path | None:
    """The run folder whose `ckpt_path=last` finds `path`, if any. Its own checkpoints/last.ckpt;
    or, in a run of lmtrain.train (`root_dir` is the output folder of the Hydra run going on:
    not a plain Trainer's in a process that ran Hydra before, which holds a stale one), a
    last.ckpt outside the run folder: a checkpoint dirpath on scratch storage, which a folder
    named checkpoints/ there does not make a run folder's."""
    if path.name != "last.ckpt":
        return None
    if root_dir is not None and HydraConfig.initialized():
        run = Path(HydraConfig.get().runtime.output_dir)
        if run.resolve() == Path(root_dir).resolve():
            own = path.resolve() == (run / "checkpoints" / "last.ckpt").resolve()
            return run if own or not inside(run, path) else None
    return path.parent.parent if path.parent.name == "checkpoints" else None


def resume_after_stop(cfg: Any, started: float) -> str:
    """How to resume a run of lmtrain.train started at `started` (time.time()) that stopped
    before its end (Ctrl-C), from the last.ckpt of its checkpoint callback (a file, or
    trainer=fsdp's folder), in its folder or its `callbacks.model_checkpoint.dirpath`; "" when
    it has none of its own (an eval or generate run, a stop before the first save): then
    nothing of it can be resumed. A last.ckpt this run neither saved nor resumed from is an
    earlier run's (`overwrite_run=true` deletes nothing): resuming it would go on with that one."""
    try:
        output_dir = Path(cfg.paths.output_dir)
        dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
        resumed = str(OmegaConf.select(cfg, "ckpt_path", default=None) or "")
        last = (Path(dirpath) if dirpath else output_dir / "checkpoints") / "last.ckpt"
        saved = last.stat().st_mtime >= started - 1.0  # a coarse clock of the file system
    except (AttributeError, OSError, OmegaConfBaseException):  # not a config; no such file
        return ""
    if saved or resumed == "last" or (resumed and Path(resumed).resolve() == last.resolve()):
        return resume_hint(last, output_dir)
    return ""
