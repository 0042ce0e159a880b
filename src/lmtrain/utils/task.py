"""What every entry point does around its task: one line per user error, a finished W&B run.

A task that fails still closes its W&B run with the exit code (otherwise the offline run is left
"running" forever), and a user error prints one line instead of a traceback. Ctrl-C prints
`interrupted` and exits 130, as a shell expects.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from lmtrain.errors import (
    LMTrainError,
    Preempted,
    RankAgreedError,
    UserErrorExit,
    find_cause,
    user_message,
)
from lmtrain.utils.composed_config import for_caller, run_folder_of, task_config
from lmtrain.utils.instantiate import config_entry_error
from lmtrain.utils.interrupt_exit import INTERRUPTED_EXIT_CODE, say_interrupted
from lmtrain.utils.io import full_disk_error
from lmtrain.utils.launch_env import rendezvous_failure
from lmtrain.utils.refused_run import log_error_line
from lmtrain.utils.resume_hints import resume_after_stop
from lmtrain.utils.sigterm_exit import TERMINATED_EXIT_CODE, sigterm_raises, terminated_line
from lmtrain.utils.validation_interval import lightning_interval_refusal

T = TypeVar("T")


def task_wrapper(task: Callable[..., T]) -> Callable[..., T]:
    """Run `task`; on an LMTrainError (or a config entry that cannot be instantiated with the
    user's values) print `error: <message>` and exit 1; always finish W&B."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        exit_code = 1
        agreed = False  # every rank stops here together: they leave together too
        environment = dict(os.environ)
        started = time.time()  # a last.ckpt saved since is this run's (interrupted_line)
        try:
            args = (task_config(args[0], task.__name__), *args[1:]) if args else args
            if "cfg" in kwargs:  # evaluate(cfg=...)
                args = (task_config(kwargs.pop("cfg"), task.__name__), *args)
            with sigterm_raises(task.__name__):  # eval, generate, export: one line too
                result = task(*args, **kwargs)
            exit_code = 0
            return result
        except Preempted as preempted:
            exit_code, agreed = preempted.code, True
            print_error(for_caller(preempted.message))
            raise
        except SIGTERMException as stopped:
            # Lightning's own SIGTERM handler, outside the training steps (setup, the final
            # validation), or sigterm_raises: a bare SIGTERMException would exit 0.
            exit_code = stopped.code if isinstance(stopped.code, int) else TERMINATED_EXIT_CODE
            print_error(for_caller(terminated_line(task.__name__, run_folder_of(args))))
            raise SIGTERMException(exit_code) from None
        except KeyboardInterrupt:
            exit_code = INTERRUPTED_EXIT_CODE
            say_interrupted(interrupted_line(args, started), rank_zero_only.rank)
            raise SystemExit(INTERRUPTED_EXIT_CODE) from None
        except SystemExit as exit_:
            if not isinstance(exit_.__context__, KeyboardInterrupt):
                raise
            # Ctrl-C inside trainer.fit: Lightning shuts down and calls exit(1) itself.
            exit_code = INTERRUPTED_EXIT_CODE
            say_interrupted(interrupted_line(args, started), rank_zero_only.rank)
            raise SystemExit(INTERRUPTED_EXIT_CODE) from None
        except Exception as err:
            # Ours, or a config entry's class refusing the user's values (train.py instantiates
            # data and model itself, so this catches them all): see config_entry_error; or
            # Lightning refusing a setting once training started.
            user_error = (
                find_cause(err, LMTrainError)
                or config_entry_error(err)
                or lightning_refusal(err)
                or lightning_interval_refusal(err)  # an interval longer than an epoch
                or rendezvous_failure(err)  # the processes could not meet
                or full_disk_error(err)
                or unwritable_error(err, run_folder_of(args))  # a folder made read-only
                or wandb_refusal(err)
            )
            if user_error is None and rank_zero_only.rank > 0 and peer_gone(err):
                # Rank 0 stopped on an error of its own (a full disk at its checkpoint save) and
                # printed it: this rank's broken collective would only bury that line.
                note = f"rank {rank_zero_only.rank}: stopped, as another rank of the run did"
                print(f"{note} (its error, if it printed one, says why)", file=sys.stderr)
                raise UserErrorExit("another rank of the run stopped") from None
            if user_error is None and peer_gone(err):  # rank 0: a rank killed (kill -9, OOM)
                user_error = another_rank_gone(run_folder_of(args))
            if user_error is None:
                raise
            agreed = isinstance(user_error, RankAgreedError)
            # One line also when a DataLoader worker raised it; from Python, naming paths.output_dir
            message = for_caller(user_message(user_error))
            print_error(message, every_rank=not agreed)  # an agreed stop is one line
            raise UserErrorExit(message) from None
        finally:
            finish_wandb(exit_code)
            if agreed:
                leave_together()
            restore_environment(environment)

    return wrapped


def restore_environment(saved: dict[str, str]) -> None:
    """Put os.environ back as it was before the task. Its libraries set variables for the rest of
    the process: Lightning's WandbLogger WANDB_MODE=dryrun, seeding PL_GLOBAL_SEED, the DDP
    launcher MASTER_ADDR and WORLD_SIZE. A second run in the process (a notebook's, a sweep's
    next job) went offline when asked to be online, and took WANDB_MODE=disabled for dryrun."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def lightning_refusal(err: BaseException) -> LMTrainError | None:
    """Lightning's MisconfigurationException is its refusal of a setting, raised when the
    trainer meets it (a callback's arguments against the trainer's: StochasticWeightAveraging's
    float `swa_epoch_start` without `trainer.max_epochs`): one line with Lightning's words."""
    refusal = find_cause(err, MisconfigurationException)
    if refusal is None:
        return None
    words = " ".join(str(refusal).split()) or type(refusal).__name__
    return LMTrainError(
        f"Lightning refused the run's settings: {words} (check the trainer.* and callbacks.* "
        "settings it names)"
    )


# What a write that a file's (or its folder's) modes or its file system refuse raises: a folder
# made read-only, a disk remounted read-only, an immutable file.
UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


def refused_write(err: BaseException | None) -> OSError | None:
    """The OSError behind `err` (along its causes and contexts) by which a named file could not
    be written for its modes or its file system (`UNWRITABLE`), or None."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in UNWRITABLE and err.filename:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def written_file(err: OSError) -> Path:
    """The file `err` names, or the one its temporary file stood for: `atomic_write` writes
    `<folder>/.<name>.tmp-<pid>` before it renames it over `<folder>/<name>`."""
    path = Path(os.fsdecode(err.filename))
    name, found, pid = path.name.rpartition(".tmp-")
    if found and name.startswith(".") and len(name) > 1 and pid.isascii() and pid.isdigit():
        return path.with_name(name[1:])
    return path


def unwritable_error(err: BaseException, run_folder: str | None = None) -> LMTrainError | None:
    """One line for any file the modes or the file system refused (metrics.json, a logger's
    file), or None: the last resort, after the checkpoint's and the CSV logger's own lines. A
    file that exists and cannot be read was a read. With the checkpoints of `run_folder` there,
    the line says how to resume from them."""
    if (found := refused_write(err)) is None:
        return None
    path, why = written_file(found), os.strerror(found.errno)
    named = path == Path(os.fsdecode(found.filename))  # not a temporary file's write
    try:
        exists = path.exists()
    except OSError:  # under a folder this process may not enter (a traceback from here before)
        return LMTrainError(
            f"could not reach {path} ({why}): make the folders above it readable and enterable "
            "(chmod a+rx), and run again"
        )
    if named and found.errno != errno.EROFS and exists and not os.access(path, os.R_OK):
        return LMTrainError(f"could not read {path} ({why}): make it readable, and run again")
    then = "run again"
    if run_folder and any((Path(run_folder) / "checkpoints").glob("*.ckpt")):
        from lmtrain.utils.checkpoint_io import resume_from  # which imports this module

        then = resume_from(Path(run_folder) / "checkpoints")
    return LMTrainError(
        f"could not write {path} ({why}): make {path.parent} (and the file, if it is there) "
        f"writable, on a file system mounted read-write, then {then}; the files written before "
        "it are as they were"
    )


def wandb_refusal(err: BaseException) -> LMTrainError | None:
    """W&B's UsageError at its first use, as one line with W&B's words; the API key and offline
    hints only where it refused the credentials ("No API key configured"), not a run id."""
    if "wandb" not in sys.modules:
        return None
    from wandb.errors import UsageError

    refusal = find_cause(err, UsageError)
    if refusal is None:
        return None
    said = " ".join(str(refusal).split())
    if any(word in said.lower() for word in ("api key", "login", "log in", "credential")):
        return LMTrainError(
            f"W&B refused the run: {said} (or set WANDB_API_KEY, or log offline: "
            "logger.wandb.offline=true, WANDB_MODE=offline)"
        )
    return LMTrainError(f"W&B refused the run: {said}: change the logger.wandb setting it means")


# How a collective says that another rank's process is gone: gloo's words, and NCCL's
# (torch's DistBackendError, a RuntimeError) when a peer exits or its socket closes.
PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "closed by remote peer",
    "remote process exited",
)


def peer_gone(err: BaseException) -> bool:
    """A collective that failed because another rank's process exited."""
    return isinstance(err, RuntimeError) and any(sign in str(err) for sign in PEER_GONE)


def another_rank_gone(run_folder: str) -> LMTrainError:
    """Rank 0's line when another rank's process exited in a collective: a kill -9 or the OOM
    killer left gloo's "Connection reset by peer" under 60 lines of traceback (red team)."""
    from lmtrain.utils.checkpoint_io import resume_from  # which imports this module

    checkpoints = Path(run_folder) / "checkpoints"
    then = resume_from(checkpoints) if checkpoints.is_dir() else "run again"
    return LMTrainError(
        "another rank of the run ended while this one waited for it (killed, out of memory, or "
        f"its own error above): {then}"
    )


def interrupted_line(args: tuple[Any, ...], started: float) -> str:
    """`interrupted`, and how to resume when the run started at `started` has a last.ckpt of its
    own (the line named none, and a sweep's report listed the job as failed)."""
    hint = resume_after_stop(args[0], started) if args else ""
    if not hint:
        return "interrupted"
    line = f"interrupted: nothing was saved after the last checkpoint; {hint}"
    return for_caller(line)


def print_error(message: str, every_rank: bool = False) -> None:
    """Print `error: <message>`, the line the run ends with (on rank 0 alone unless
    `every_rank`), and add it to the run's log: why the run ended, read later there too."""
    if every_rank or rank_zero_only.rank == 0:
        print(f"error: {message}", file=sys.stderr, flush=True)
    log_error_line(f"error: {message}")


def leave_together() -> None:
    """Wait for every rank before exiting after a stop they agreed on.

    Rank 0 finishes the W&B run first; a rank > 0 that exited before that would make Lightning's
    launcher, which watches the ranks it started, kill rank 0 mid-way.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def finish_wandb(exit_code: int) -> None:
    """Close the W&B run if one is open (a no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def fail(message: str) -> NoReturn:
    """End the process the way task_wrapper ends a user error: one line, exit code 1."""
    print_error(message, every_rank=True)
    raise UserErrorExit(message)


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Tensors and numbers from Lightning's metric dicts as plain floats."""
    return {k: float(v) for k, v in metrics.items()}
