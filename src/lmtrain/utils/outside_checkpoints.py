"""A run's checkpoints outside its run folder (`callbacks.model_checkpoint.dirpath=/scratch/...`,
checkpoints on a big scratch disk): whose a checkpoint there is, and going on from one.

Inside the run folder, where a checkpoint lies says whose it is (`resumes_run_in`). A dirpath
elsewhere can be shared by two runs, so there the checkpoint itself says: its run config (stored
in every lmtrain checkpoint under `lmtrain.run_config`) names the run folder that wrote it
(`paths.output_dir`) and the folders its checkpoint callbacks wrote to (`dirpath`). A checkpoint
that lies in such a folder and was written by the run in this folder is this run's, and resuming
from it continues this run; any other one (another run's, a copy, a file of unknown origin) is
not, and never lets a second run take over the first one's folder or checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.checkpoint_dirpaths import KEY
from lmtrain.utils.earlier_checkpoint import same_file
from lmtrain.utils.safe_load import CHECKPOINT_KEY, saved_state, saved_step


def resumes_run_in(output_dir: str | Path, ckpt_path: str | Path | None) -> bool:
    """Whether the run continues the one in `output_dir`: it resumes from one of that folder's
    checkpoints (`ckpt_path=last` or a path inside it, such as the `hpc_ckpt_*.ckpt` of
    Lightning's auto-requeue that `lmtrain.utils.requeue.resume_after_requeue` picks), or from
    one that run saved to its checkpoint dirpath elsewhere (`written_by_run_in`)."""
    if not ckpt_path:
        return False
    return inside(output_dir, ckpt_path) or written_by_run_in(ckpt_path, output_dir)


def inside(folder: str | Path, path: str | Path) -> bool:
    """Whether `path` lies in `folder`, links resolved or not: `checkpoints/` linked to scratch
    storage is still the run folder's."""
    if Path(folder).resolve() in Path(path).resolve().parents:
        return True
    return Path(os.path.abspath(folder)) in Path(os.path.abspath(path)).parents


def outside_folder(dirpath: Any, output_dir: str | Path) -> Path | None:
    """`dirpath` (a checkpoint callback's), resolved, when it is a local folder outside the run
    folder `output_dir`; None when unset, remote (`s3://...`: Lightning's to read) or inside,
    links resolved or not (the run folder's `checkpoints/` linked to scratch storage, which
    Lightning resolves, is still the run folder's)."""
    if not isinstance(dirpath, str | Path) or not str(dirpath) or "://" in str(dirpath):
        return None
    folder = Path(dirpath).expanduser()
    own = Path(output_dir).expanduser()
    if folder.resolve() == own.resolve() or inside(own, folder):
        return None
    linked = own / "checkpoints"
    return None if linked.exists() and same_file(folder, linked.resolve()) else folder.resolve()


def configured_dirpath(config: DictConfig, run_dir: str | Path) -> str | None:
    """`callbacks.model_checkpoint.dirpath` of a train config (the command's, or a run's saved
    one), resolved as the run in `run_dir` resolves it (`paths.output_dir` is `run_dir`: Hydra
    sets its job folder only once the job starts); None when unset or not resolvable here."""
    try:
        plain = OmegaConf.to_container(config, resolve=False)
        plain.pop("hydra", None)
        probe = OmegaConf.create(plain)
        if isinstance(probe.get("paths"), DictConfig):
            probe.paths.output_dir = str(run_dir)
        value = OmegaConf.select(probe, KEY, throw_on_resolution_failure=False)
    except Exception:  # a saved config that is no mapping, an interpolation that fails
        return None
    return value if isinstance(value, str) and value else None


def checkpoint_run(path: str | Path) -> tuple[Path | None, list[Path]]:
    """The run folder and the local checkpoint dirpaths named by the run config of checkpoint
    `path` (a file, or a sharded folder's `meta.pt`), read without its tensors' bytes; (None,
    []) where it names none or cannot be read (the loader names a damaged file)."""
    state = saved_state(path)
    extra = state.get(CHECKPOINT_KEY) if state is not None else None
    config = extra.get("run_config") if isinstance(extra, dict) else None
    if not isinstance(config, dict):
        return None, []
    paths, callbacks = config.get("paths"), config.get("callbacks")
    run = paths.get("output_dir") if isinstance(paths, dict) else None
    nodes = callbacks.values() if isinstance(callbacks, dict) else []
    dirpaths = [node.get("dirpath") for node in nodes if isinstance(node, dict)]
    local = [Path(d).expanduser() for d in dirpaths if isinstance(d, str) and d and "://" not in d]
    return (Path(run) if isinstance(run, str) and os.path.isabs(run) else None), local


def written_by_run_in(path: str | Path, output_dir: str | Path) -> bool:
    """Whether checkpoint `path` lies in a dirpath its run config names and was written by the
    run in `output_dir`: not a copy, nor another run's checkpoint in a shared dirpath."""
    run, dirpaths = checkpoint_run(path)
    folder = Path(path).expanduser().parent
    return (
        run is not None
        and same_file(run, Path(output_dir))
        and any(same_file(d, folder) for d in dirpaths)
    )


def refuse_going_back_in_dirpath(folder: Path, ckpt_path: str | Path, key: str) -> None:
    """Raise LMTrainError when `ckpt_path`, a checkpoint of the run in `folder` kept outside it,
    was saved at an earlier step than the last.ckpt beside it, whose later steps going on from
    it would replace (`lmtrain.utils.earlier_checkpoint.refuse_going_back` does the same for
    the run folder's own checkpoints/). A requeued SLURM job picks its own and is not asked."""
    chosen = Path(ckpt_path)
    last = chosen.parent / "last.ckpt"
    if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0 or inside(folder, chosen):
        return
    if same_file(chosen, last) or not last.exists():
        return
    chosen_step, last_step = saved_step(chosen), saved_step(last)
    if chosen_step is None or last_step is None or chosen_step >= last_step:
        return
    raise LMTrainError(
        f"ckpt_path={chosen} (step {chosen_step}) would go on in {key}={folder}, whose "
        f"{last} (step {last_step}) and records of the later steps it would replace: pass "
        "overwrite_run=true to go back to that step in this folder, or go on from it in a new "
        f"run folder with a new {KEY}"
    )
