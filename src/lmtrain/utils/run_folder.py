"""A run folder belongs to one live run.

Hydra names the run folder, and a fixed `hydra.run.dir` (torchrun, a repeated command, a
resume with a typo) can hand one folder to a second run: it would overwrite the first run's
`last.ckpt`, `metrics.json` and samples, and two live runs would interleave their files.
`claim_run_folder` stops both before any data is prepared:

- A folder that holds checkpoints (`checkpoints/*.ckpt`, files or sharded FSDP folders) is
  refused, unless this run resumes from a checkpoint of that folder (`ckpt_path=last`, a
  requeued SLURM job, or one it saved to a dirpath elsewhere: `resumes_run_in`) or the command
  says `overwrite_run=true`. From the command line, so is a folder with another run's record
  (`RUN_RECORD`: its metrics, CSV or samples).
- A lock on `<run folder>/.lock` (`lmtrain.utils.locks`), held until the run ends (`train()`
  returns or raises, or the process dies), refuses a second live run.

Only global rank 0 claims: Lightning's DDP launcher re-runs the command for ranks > 0 in rank
0's folder, and torchrun and SLURM start every rank with the same folder. When rank 0 refuses
under torchrun, it exits 1 and torchrun stops the other ranks.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.errors import LMTrainError, UserErrorExit
from lmtrain.utils import locks
from lmtrain.utils.checkpoint_dirpaths import release_dirpaths
from lmtrain.utils.checks import refuse_bad_task_name, strict_bool
from lmtrain.utils.earlier_checkpoint import refuse_going_back
from lmtrain.utils.launch import (
    refuse_nodes_no_one_starts,
    refuse_run_folder_per_process,
    refuse_torchrun_world_mismatch,
    set_rank_from_node,
)
from lmtrain.utils.lightning_keywords import refuse_lightning_keyword
from lmtrain.utils.linked_files import refuse_linked_files
from lmtrain.utils.local_configs import refuse_missing_local
from lmtrain.utils.outside_checkpoints import refuse_going_back_in_dirpath, resumes_run_in
from lmtrain.utils.real_run_record import records_real_run
from lmtrain.utils.refused_run import note_run_folder, remove_empty_up_to, remove_refused_run_folder
from lmtrain.utils.run_dir_checks import refuse_unmade_folder
from lmtrain.utils.unresolved_folder import as_typed, error_line, refuse_unresolved_folder

LOCK_FILE = locks.RUN_FOLDER_LOCK  # stays, or two runs could lock two files (but: refused_run)
# What a run's rank 0 leaves in its folder besides checkpoints. Not `.hydra/`: under torchrun
# every rank is a Hydra run, and another rank may have written it into this run's folder first.
RUN_RECORD = ("metrics.json", "csv/metrics.csv", "samples.txt")
# How long a rank > 0 that refuses the folder waits for its launcher to stop it (see on_run_start).
RANK_ZERO_GRACE_S = 10.0

T = TypeVar("T")
# The folder this process holds and how to let it go.
_held: tuple[Path, Callable[[], None]] | None = None


def folder_key(folder: Path) -> str:
    """The setting that names run folder `folder`: `hydra.run.dir` when it is the running Hydra
    job's, and `paths.output_dir` for a config composed in Python (`compose()`, then
    `train(cfg)`), which has no job folder of its own."""
    if HydraConfig.initialized():
        try:
            if Path(str(HydraConfig.get().runtime.output_dir)).resolve() == folder.resolve():
                return "hydra.run.dir"
        except OmegaConfBaseException:  # composed without a job: no job folder
            pass
    return "paths.output_dir"


def claim_run_folder(
    output_dir: str | Path,
    resuming: bool,
    overwrite: bool,
    key: str = "hydra.run.dir",
    ckpt_path: str | Path | None = None,
) -> None:
    """Make `output_dir` this run's, or raise LMTrainError naming what is in the way.

    `resuming`: this run continues the one whose checkpoints are in the folder (see
    `resumes_run_in`), from `ckpt_path`; `overwrite`: the command allows replacing another
    run's files (or the run's own later steps); `key`: the setting that names the folder, for
    the messages (`folder_key`).
    """
    global _held
    folder = Path(output_dir).resolve()
    if getattr(rank_zero_only, "rank", 0) > 0:
        # Rank 0 holds the lock. The other ranks refuse too, each on its own, before Hydra
        # writes their `.hydra/` over the first run's (torchrun starts every rank as a run).
        if not (resuming or overwrite):
            refuse_other_runs_checkpoints(folder, key)
        return
    if _held is None or _held[0] != folder:
        release_held()  # this process's previous run is over
        top = folder  # stat of a name too long raises: inside the try
        try:
            top = next((p for p in reversed(folder.parents) if not p.exists()), folder)
            refuse_linked_files(folder, key)
            folder.mkdir(parents=True, exist_ok=True)
            _held = (folder, locks.lock_folder(folder, key))
        except OSError as err:  # under a file, in /proc, read-only: Hydra would only trace back
            remove_empty_up_to(folder, top)  # the folders above it this made (a long name)
            where = f": {err.filename}" if err.filename else ""
            raise LMTrainError(
                f"{key}={folder} cannot be created or written ({err.strerror}{where}): "
                f"pass a writable {key}, or a writable paths.log_dir (run folders go "
                "under it by default)"
            ) from None
    if resuming and ckpt_path and not overwrite:
        refuse_going_back(folder, ckpt_path, key)
        refuse_going_back_in_dirpath(folder, ckpt_path, key)  # a dirpath elsewhere: its last.ckpt
    if resuming or overwrite:
        return
    refuse_other_runs_checkpoints(folder, key)


def release_held() -> None:
    """Let go of the run folder and the outside checkpoint folders this process holds."""
    global _held
    if _held is not None:
        _held[1]()
        _held = None
    release_dirpaths()


def released_after(task: Callable[..., T]) -> Callable[..., T]:
    """`task`, letting go of the folders it claimed when it returns or raises: a run called from
    Python (a notebook) is over then, and a command-line run may take its folder."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return task(*args, **kwargs)
        except UserErrorExit:  # its `error:` line printed: a folder made for nothing goes
            release_held()
            remove_refused_run_folder()
            raise
        finally:
            release_held()

    return wrapped


def refuse_other_runs_checkpoints(folder: Path, key: str = "hydra.run.dir") -> None:
    """Raise LMTrainError when `folder` holds checkpoints (of a run this one does not resume)."""
    found = existing_checkpoints(folder)
    if found:
        shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        raise LMTrainError(
            f"{key}={folder} already holds checkpoints of another run ({shown}): resume "
            f"it with ckpt_path=last, pass another {key}, or overwrite_run=true to "
            "replace it"
        )


def refuse_other_runs_record(folder: Path) -> None:
    """Raise LMTrainError when `folder` holds what another run writes (`RUN_RECORD`): a run
    without checkpoints (`callbacks.model_checkpoint=null`, an eval) is still a run, and this
    one would replace its config, metrics, CSV and samples. Checked before
    Hydra writes `.hydra/`, by rank 0 (ranks > 0 start in rank 0's folder)."""
    found = [name for name in RUN_RECORD if (folder / name).is_file()]
    if found:
        resumable = (folder / "checkpoints" / "last.ckpt").exists()  # else resume= fails too
        resume = "resume that run with resume=<its folder>, " if resumable else ""
        raise LMTrainError(
            f"hydra.run.dir={folder} already holds another run's {', '.join(found)}: pass "
            f"another hydra.run.dir, {resume}or overwrite_run=true to replace its files"
        )


class ClaimRunFolder(HydraCallback):
    """Hydra callback: claim the run folder before Hydra writes `.hydra/` into it.

    Hydra saves the composed config to `<run folder>/.hydra/` before the task starts, so a second
    run refused in `train()` would already have replaced the first run's record of its config.
    Registered for `lmtrain.train` in `configs/train.yaml` (`hydra.callbacks`); `train()` claims
    again (a no-op for the folder this process holds), which covers runs made without Hydra's
    command line (tests, notebooks). A refusal is one `error:` line and exit code 1.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a sweep folder that holds another sweep's jobs, before any job starts:
        Hydra writes each job's `.hydra/` before the job can refuse its folder."""
        try:
            refuse_bad_task_name(config)  # the sweep folder is named by it
            refuse_unresolved_folder(config, "hydra.sweep.dir")  # `${oc.env:UNSET}` in a path
            refuse_unmade_folder(config, "hydra.sweep.dir")  # `~/sweep`, an empty PROJECT_ROOT
            overwrite = strict_bool("overwrite_run", config.get("overwrite_run", False))
            if not overwrite:
                refuse_other_sweeps_jobs(Path(str(config.hydra.sweep.dir)).resolve())
        except (LMTrainError, OmegaConfBaseException) as err:
            print(error_line(err, config, "hydra.sweep.dir"), file=sys.stderr, flush=True)
            raise SystemExit(1) from None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_nodes_no_one_starts(config)  # before the folder is made: nothing to leave behind
        set_rank_from_node(config)  # a node's first process under Lightning's multi-node launch
        refuse_run_folder_per_process(config, as_typed(config.hydra.overrides.hydra), RunMode.RUN)
        refuse_torchrun_world_mismatch(config)  # every process would train the whole run
        try:
            refuse_bad_task_name(config)  # before Hydra makes <log_dir>/<task_name>/... and its log
            refuse_missing_local(config)  # before Hydra writes .hydra/ into the run folder
            refuse_unresolved_folder(config, "hydra.run.dir")  # `${oc.env:UNSET}` in a path
            refuse_unmade_folder(config, "hydra.run.dir")  # `~/run`, an empty PROJECT_ROOT
            run_dir = Path(str(config.hydra.run.dir))  # built from task_name: read after its check
            note_run_folder(config, run_dir)  # one this command makes (lmtrain.utils.refused_run)
            ckpt_path = config.get("ckpt_path")
            refuse_lightning_keyword(ckpt_path, run_dir)  # `best`: this folder's best named first
            if ckpt_path == "last":
                ckpt_path = str(run_dir / "checkpoints" / "last.ckpt")
            # Hydra passes overwrite_run=no as the string "no", which bool() reads as yes.
            overwrite = strict_bool("overwrite_run", config.get("overwrite_run", False))
            # A requeued SLURM job resumes from its folder (utils.requeue.resume_after_requeue),
            # as does one whose folder holds Lightning's auto-requeue saves, unless it is new.
            requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
            fast = OmegaConf.select(config, "trainer.fast_dev_run", default=None)
            debug = debug_run_problem(run_dir.resolve(), fast, "hydra.run.dir")
            if debug and not (requeued or overwrite):  # a requeued debug job's folder is its own
                raise LMTrainError(debug)
            saves = SLURMEnvironment.detect() and any(run_dir.glob("hpc_ckpt_*.ckpt"))
            resuming = requeued or (saves and not overwrite) or resumes_run_in(run_dir, ckpt_path)
            claim_run_folder(run_dir, resuming, overwrite=overwrite, ckpt_path=ckpt_path)
            if not (resuming or overwrite) and getattr(rank_zero_only, "rank", 0) == 0:
                refuse_other_runs_record(run_dir)
        except (LMTrainError, OmegaConfBaseException) as err:
            if getattr(rank_zero_only, "rank", 0) == 0:  # one line for the whole run
                print(error_line(err, config, "hydra.run.dir"), file=sys.stderr, flush=True)
            else:
                # Under torchrun (or srun) every rank refuses at once, and rank 0 prints the
                # line. A rank > 0 that exited first would get rank 0 stopped by the launcher
                # before it printed: this one waits, and the launcher stops it when rank 0 exits.
                time.sleep(RANK_ZERO_GRACE_S)
            raise SystemExit(1) from None


def refuse_other_sweeps_jobs(sweep_dir: Path) -> None:
    """Raise LMTrainError when `sweep_dir` holds job folders of an earlier sweep (a `.hydra/`
    record, checkpoints or `RUN_RECORD` files) or its Optuna results.

    Jobs are numbered from 0 in every sweep: a second sweep into the folder would rewrite each
    old job's `.hydra/` (the report would pair the old metrics with the new values) and the
    results file, and the old jobs' metrics.json would pass for the new jobs' results.
    """
    if not sweep_dir.is_dir():
        return
    held = [*sweep_dir.glob("optimization_results.yaml")]
    # hydra.sweep.subdir: the job number, or a path of any depth (`a/b/${hydra.job.num}`),
    # found by its `.hydra/` record; and at the usual depths, by checkpoints or records alone.
    recorded = {p.parent for p in sweep_dir.glob("**/.hydra") if p.parent != sweep_dir}
    for job in sorted({*recorded, *sweep_dir.glob("*"), *sweep_dir.glob("*/*")}):
        if job.is_dir() and job.name != ".hydra" and holds_a_run(job):
            held.append(job)
    if held:
        shown = ", ".join(str(p.relative_to(sweep_dir)) for p in held[:3])
        more = f" and {len(held) - 3} more" if len(held) > 3 else ""
        raise LMTrainError(
            f"hydra.sweep.dir={sweep_dir} already holds another sweep's jobs ({shown}{more}), "
            "whose records this sweep would replace: pass another hydra.sweep.dir (by default "
            "each sweep gets its own), or overwrite_run=true to run into it anyway (nothing is "
            "deleted; files of the same job number are replaced as the jobs write them)"
        )


def holds_a_run(folder: Path) -> bool:
    """Whether `folder` is (or was) a run's: its `.hydra/` record, checkpoints or RUN_RECORD."""
    return (
        (folder / ".hydra").is_dir()
        or bool(existing_checkpoints(folder))
        or any((folder / name).is_file() for name in RUN_RECORD)
    )


def debug_run_problem(folder: Path, fast_dev_run: Any, key: str) -> str | None:
    """Why a debug run (`trainer.fast_dev_run`: true or a number of batches) may not use `folder`:
    it saves no checkpoint but writes a run's record (`.hydra/`, metrics.json, samples), which
    in a run's folder (`debug=fdr ckpt_path=last`) replaced that run's: `resume=` then read the
    debug config and stopped at once. overwrite_run=true lets it (the caller's to check)."""
    if not (fast_dev_run is True or (type(fast_dev_run) is int and fast_dev_run > 0)):
        return None
    ckpts = existing_checkpoints(folder)
    found = [*ckpts[:1], *(name for name in RUN_RECORD if (folder / name).is_file())]
    found += [".hydra/"] if records_real_run(folder / ".hydra" / "config.yaml") else []
    value = "true" if fast_dev_run is True else fast_dev_run
    weights = "; ckpt_path={} still loads that run's weights into the debug run"
    return (
        f"{key}={folder} already holds a run ({', '.join(found)}), whose record a debug run "
        f"(trainer.fast_dev_run={value}) would replace: pass a new {key}"
        f"{weights.format(folder / ckpts[0]) if ckpts else ''}"
        if found
        else None
    )


def existing_checkpoints(folder: Path) -> list[str]:
    """`checkpoints/*.ckpt` of `folder`, relative to it, last.ckpt first; temporary files of an
    interrupted save are not checkpoints."""
    found = sorted((folder / "checkpoints").glob("*.ckpt"), key=lambda p: (p.stem != "last", p))
    return [str(p.relative_to(folder)) for p in found]
