"""A run refused for a user mistake: why, in its log; and no folder left that it made for nothing.

A refused value (`model.optimizer.lr=-1`, `data.batch_size=0`, a LoRA setting) ends the command
with one `error:` line, after Hydra made the run folder: Hydra's `run_job` writes `.hydra/` (the
composed config, bad value included, Hydra's own config and the overrides) and opens the run's
log, `<task_name>.log`, before the task starts, and `ClaimRunFolder` locked it (`.lock`) before
that. Left there, the folder passed for a run that had started, and its log ended without a
reason ("Building model ..."). So:

- `log_error_line`: each `error:` line the task wrapper prints also goes to the run's log file
  (rank 0's; not again to the console, which has it already).
- `note_run_folder` (called by `ClaimRunFolder.on_run_start`, before anything makes the folder)
  notes the run folder this command is about to make; `remove_refused_run_folder` (called by
  `run_folder.released_after` once a user error ended the task and the folder's lock is let go)
  removes it, and the empty folders above it the command made, when it holds nothing but what
  Hydra, the claim, the log and the loggers (before their first step) wrote.

Removing is safe here. The command made the folder: it did not exist when the command started,
so it is never a resumed run's, an `overwrite_run=true` run's, or a fixed `hydra.run.dir` that
existed before (those keep everything; only the `error:` line is added to their log). It holds
no user data: every entry is checked by name and kind (`.hydra/` with Hydra's three YAML files,
`.lock`, the run's log file), and so is what the shipped loggers write before their first step
(`logger_leftover`): `csv/hparams.yaml`; TensorBoard event files of this process with nothing but
hyperparameters (and `hparams.yaml`); `wandb_run_id` (and `.folder`) and `wandb/` holding the
offline run of that id, finished (W&B's service no longer writes there) and without a history
row, with W&B's links to it. Anything else there (checkpoints, `metrics.csv`, a logged step,
`metrics.json`, samples, an online W&B run's folder, another link) keeps the whole folder. The
lock is taken again for the removal, so a run that claimed the folder in between keeps it. Only a
plain run (not a sweep's job) removes, on global rank 0, started alone: under torchrun, SLURM or
several nodes the other ranks are commands of their own that write into the folder on their own
schedule, and once Lightning's DDP launcher has started ranks > 0 (a process group exists) they
may still do so.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils import locks
from lmtrain.utils.tracker_ids import FOLDER_RECORD_SUFFIX
from lmtrain.utils.wandb_run import RUN_ID_FILE

# The logger the `error:` lines are written to the run's log as.
log = logging.getLogger("lmtrain")

# What Hydra writes into `<run folder>/.hydra/` (hydra.output_subdir) before the task starts.
HYDRA_RECORD = ".hydra"
HYDRA_FILES = frozenset({"config.yaml", "hydra.yaml", "overrides.yaml"})
# The claim's lock, and the owner file that stands for it where POSIX locks are missing.
LOCK_FILES = frozenset({locks.RUN_FOLDER_LOCK, locks.RUN_FOLDER_LOCK + locks.OWNER_SUFFIX})
# The loggers' files in a run folder before their first step (configs/logger/*.yaml).
RUN_ID_FILES = frozenset({RUN_ID_FILE, RUN_ID_FILE + FOLDER_RECORD_SUFFIX})
CSV_FOLDER, TENSORBOARD_FOLDER, WANDB_FOLDER = "csv", "tensorboard", "wandb"
HPARAMS_FILE, EVENTS_PREFIX = "hparams.yaml", "events.out.tfevents."
# What W&B (0.31) writes into an offline run's folder before its first step, besides its run file.
WANDB_RUN_FILES = frozenset(
    [f"files/{name}" for name in ("requirements.txt", "output.log", "wandb-metadata.json")]
    + [f"files/{name}" for name in ("config.yaml", "wandb-summary.json", "conda-environment.yaml")]
    + [f"logs/{name}" for name in ("debug.log", "debug-internal.log", "debug-core.log")]
)
# How launchers say they started several processes of the run, each a command of its own.
LAUNCHED_TOGETHER = ("WORLD_SIZE", "SLURM_NTASKS")


@dataclass(frozen=True)
class MadeFolder:
    """A run folder this command is about to make: `folder`, and `top`, the highest of it and
    the folders above it that do not exist yet (`logs/` on a first run), made with it."""

    folder: Path
    top: Path


_made: MadeFolder | None = None


def log_error_line(line: str) -> None:
    """Write `line`, an `error:` line already printed, to the run's log file (rank 0's): through
    its handler alone, since the console handler would print the line a second time."""
    if getattr(rank_zero_only, "rank", 0) > 0:
        return
    for handler in run_log_handlers():
        record = log.makeRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
        if record.levelno >= handler.level:
            handler.handle(record)


def run_log_handlers() -> list[logging.FileHandler]:
    """The root logger's file handlers that write into Hydra's running job folder (the run's
    log: `hydra/job_logging`'s file handler), none outside a Hydra job."""
    try:
        if not HydraConfig.initialized():
            return []
        folder = Path(str(HydraConfig.get().runtime.output_dir)).resolve()
    except Exception:  # composed without a job, an unresolvable folder: no run log to add to
        return []
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    return [h for h in handlers if Path(h.baseFilename).resolve().parent == folder]


def note_run_folder(config: DictConfig, run_dir: Path) -> None:
    """Note `run_dir` as the folder this command makes, when it does not exist yet and this
    process is a plain run's global rank 0, started alone (see the module's docstring)."""
    global _made
    _made = None
    mode = OmegaConf.select(config, "hydra.mode", default=None)
    if mode not in (None, RunMode.RUN) or getattr(rank_zero_only, "rank", 0) > 0:
        return
    if launched_together(config):
        return
    try:
        folder = run_dir.resolve()
        if os.path.lexists(folder):
            return
        top = folder
        while top.parent != top and not os.path.lexists(top.parent):
            top = top.parent
    except (OSError, RuntimeError):  # a folder it cannot look into, a loop of links: keep it
        return
    _made = MadeFolder(folder, top)


def launched_together(config: DictConfig) -> bool:
    """Whether a launcher started this run's processes together (torchrun, SLURM), or the run
    spans nodes: an unreadable count counts as several."""
    for name in LAUNCHED_TOGETHER:
        try:
            if int(os.environ.get(name, "1") or 1) > 1:
                return True
        except ValueError:
            return True
    nodes = OmegaConf.select(config, "trainer.num_nodes", default=1)
    return not isinstance(nodes, int) or nodes > 1


def remove_refused_run_folder() -> None:
    """Remove the run folder noted by `note_run_folder`, refused by a user error, when it holds
    only what Hydra, the claim and the log wrote; then the empty folders above it that the
    command made. Called once the folder's lock is let go; anything in the way keeps it."""
    global _made
    made, _made = _made, None
    if made is None or distributed_started():
        return
    try:
        release = locks.acquire(made.folder / locks.RUN_FOLDER_LOCK)
    except (OSError, LMTrainError, locks.LockHeld):  # claimed by another run since, or odd
        return
    try:
        entries = refused_leftovers(made.folder, run_log_handlers())
        if entries is None:
            return
        for path in entries:
            if is_kind(path, stat.S_ISDIR):
                shutil.rmtree(path)
            elif path.name not in LOCK_FILES:
                path.unlink()
        (made.folder / locks.RUN_FOLDER_LOCK).unlink()
    except OSError:  # a file held or made read-only: what is left stays
        return
    finally:
        release()  # closes the lock (or removes its owner file)
    remove_empty_up_to(made.folder, made.top)


def refused_leftovers(folder: Path, logs: list[logging.FileHandler]) -> list[Path] | None:
    """The entries of `folder` that Hydra, the claim, the log and the loggers wrote, or None
    when anything else is there. The run's log handlers (`logs`) are closed and taken off the
    root logger."""
    log_files = {Path(h.baseFilename).resolve(): h for h in logs}
    entries = list(folder.iterdir())
    for entry in entries:
        if entry.name == HYDRA_RECORD and is_kind(entry, stat.S_ISDIR):
            inner = list(entry.iterdir())
            if not all(p.name in HYDRA_FILES and is_kind(p, stat.S_ISREG) for p in inner):
                return None
        elif is_kind(entry, stat.S_ISREG):
            if not (entry.name in LOCK_FILES | RUN_ID_FILES or entry.resolve() in log_files):
                return None
        elif not logger_leftover(entry):
            return None
    root = logging.getLogger()
    for handler in log_files.values():  # else a later line would make the log file again
        root.removeHandler(handler)
        handler.close()
    return entries


def logger_leftover(entry: Path) -> bool:
    """Whether the folder `entry` holds only what a logger wrote before its first step."""
    if not is_kind(entry, stat.S_ISDIR):
        return False
    inner = list(entry.iterdir())
    if entry.name == WANDB_FOLDER:
        return unsynced_wandb_run(entry, inner)
    if not all(is_kind(p, stat.S_ISREG) for p in inner):
        return False
    if entry.name == CSV_FOLDER:
        return all(p.name == HPARAMS_FILE for p in inner)
    events = [p for p in inner if p.name != HPARAMS_FILE]
    return entry.name == TENSORBOARD_FOLDER and all(events_without_steps(p) for p in events)


def events_without_steps(path: Path) -> bool:
    """Whether `path` is an event file of this process (the pid in its name) that holds no
    logged value: its version record, hyperparameters at most. Unreadable: no."""
    fields = path.name.removeprefix(EVENTS_PREFIX).split(".")
    if not path.name.startswith(EVENTS_PREFIX) or len(fields) < 3:
        return False
    if fields[-2] != str(os.getpid()):  # another process's (this one made the folder)
        return False
    try:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        for event in EventFileLoader(str(path)).Load():
            plugins = {value.metadata.plugin_data.plugin_name for value in event.summary.value}
            if event.WhichOneof("what") not in ("file_version", "summary") or plugins - {"hparams"}:
                return False
    except Exception:  # no tensorboard to read it with, a damaged file: keep it
        return False
    return True


def unsynced_wandb_run(wandb_folder: Path, inner: list[Path]) -> bool:
    """Whether `wandb_folder` holds only the finished offline W&B run named by the run
    folder's `wandb_run_id`, with no history row, and W&B's links into it."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        return False  # not finished: W&B's service may still write into the folder
    try:
        run_id = (wandb_folder.parent / RUN_ID_FILE).read_text().strip()
    except OSError:
        return False
    runs = [p for p in inner if is_kind(p, stat.S_ISDIR)]
    if not run_id or len(runs) != 1 or not runs[0].name.startswith("offline-run-"):
        return False
    run = runs[0]
    if not run.name.endswith(f"-{run_id}") or not only_wandb_files(run, run_id):
        return False
    if history_logged(run):
        return False
    for link in inner:  # latest-run, debug.log, debug-internal.log
        if link != run and not (
            is_kind(link, stat.S_ISLNK) and link.resolve().is_relative_to(run.resolve())
        ):
            return False
    return True


def only_wandb_files(session: Path, run_id: str) -> bool:
    """Whether the offline W&B run `session` holds only files W&B writes there before a step
    (its run file, `files/` W&B fills, its debug logs) and folders: a file of anyone else's
    (one dropped into `files/`, a `wandb.save`) keeps the folder."""
    written = WANDB_RUN_FILES | {f"run-{run_id}.wandb"}
    for path in session.rglob("*"):
        if is_kind(path, stat.S_ISDIR):
            continue
        if path.relative_to(session).as_posix() not in written:  # a file, or W&B's link
            return False  # (logs/debug-core.log: removed as a link, its target kept)
    return True


def history_logged(session: Path) -> bool:
    """Whether the offline W&B run `session` (its `offline-run-*` folder) holds a history row (a
    logged step), read back with W&B's own reader, `wandb leet inspect` (W&B has no Python
    reader of its run files); no reader, or one that fails, counts as a row: the folder stays."""
    reader = Path(sys.executable).with_name("wandb")
    try:
        out = subprocess.run(
            [str(reader), "leet", "inspect", "--json", str(session)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return True
    return not records or any(record.get("type") == "history" for record in records)


def is_kind(path: Path, kind: Callable[[int], bool]) -> bool:
    """Whether `path` itself (not a link's target) is of `kind` (`stat.S_ISREG`, `S_ISDIR`)."""
    return kind(os.lstat(path).st_mode)


def remove_empty_up_to(folder: Path, top: Path) -> None:
    """Remove `folder`, then the folders above it up to `top`, each only while it is empty."""
    current = folder
    while True:
        try:  # one never made (a name too long) is skipped: those above it may be empty
            if os.path.lexists(current):
                current.rmdir()
        except OSError:  # not empty (another run's folder, the lock taken again)
            return
        if current == top or current.parent == current:
            return
        current = current.parent


def distributed_started() -> bool:
    """Whether this process is in a process group: Lightning's DDP launcher has started ranks
    > 0 in the run folder, which may still write into it."""
    distributed = sys.modules.get("torch.distributed")
    return bool(distributed and distributed.is_available() and distributed.is_initialized())
