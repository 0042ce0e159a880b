"""A SIGTERM anywhere in a sweep that the basic launcher runs ends it as a preemption does.

Only Lightning (in `fit` and `validate`) and `PreemptionCheckpoint` (in training) handled
SIGTERM. One that landed between two jobs, or in a job outside them (composing, data, model
build), killed the process with 143 and no line; the ledger recorded nothing, and the report
showed a cut-short sweep as a complete one (red team r_sig30). So `SweepOutcome` installs
`on_sigterm` for a basic-launcher sweep. As the process's own handler it raises
`SweepTerminated`, which no `except Exception` stops (Hydra's job and callback wrappers, the
task wrapper, the sweep's job runner), and the process unwinds to the entry point's
`interrupt_exit.interrupt_is_one_line`, which calls `end_terminated_sweep`: the job it stopped
and the jobs that did not run go into the ledger, and one `error:` line says so, with the
command that runs them into `<sweep dir>_rest`; exit 143. Inside `fit` and `validate`,
Lightning's and PreemptionCheckpoint's handlers call this one as the handler they found: called
so, it does nothing, and the stop stays theirs (a save, and the job's own lines).

A Ctrl-C between jobs (or in a job outside its task wrapper, which records its own) reaches the
same place as a KeyboardInterrupt and is recorded the same way, as `interrupted (Ctrl-C)`, exit
130: it said `interrupted` and left the ledger without an end, as if the sweep were running.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.utils.interrupt_exit import INTERRUPTED_EXIT_CODE
from lmtrain.utils.override_text import override_arg
from lmtrain.utils.resume_hints import resume_after_stop
from lmtrain.utils.sigterm_exit import TERMINATED_EXIT_CODE
from lmtrain.utils.sweep_ledger import (
    BEFORE,
    INTERRUPTED,
    earlier_job,
    read_ledger,
    read_sweep_file,
    record_cut_short,
    record_job,
    saved_job,
)
from lmtrain.utils.sweep_plan import (
    end_sweep_early,
    not_run_line,
    planned_jobs,
    raw,
    rerun_command,
    saved_sweep,
)


class SweepTerminated(BaseException):
    """SIGTERM in a sweep outside any handler of a job's: not an Exception, so that nothing on
    the way up (Hydra, the task wrapper, the job runner) takes it for a job's failure."""


@dataclass
class Job:
    """The job the sweep last started (Hydra's `on_job_start`): its folder, when it started, and
    the settings that find its last.ckpt (resolved then: only the job's Hydra config can)."""

    num: int
    output_dir: Path
    started: float
    checkpoints: DictConfig


@dataclass
class HeldSweep:
    sweep_dir: Path
    entry_module: str
    previous: Any  # the SIGTERM handler before the sweep's
    pid: int
    job: Job | None = None


_held: HeldSweep | None = None


def hold_sigterm(config: DictConfig) -> None:
    """From now until `release_sigterm`, a SIGTERM ends the sweep of `config` as a preemption
    does; only under the basic launcher (its jobs run in this process, one after another; a
    submitit launcher's run elsewhere and handle their own)."""
    global _held
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    if not launcher.endswith("BasicLauncher"):
        return
    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may install a handler (a sweep started from a thread)
    release_sigterm()
    previous = signal.getsignal(signal.SIGTERM)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)  # `python -m lmtrain.train`
    entry = spec.name if spec is not None and spec.name.startswith("lmtrain.") else None
    _held = HeldSweep(sweep_dir, entry or "lmtrain.train", previous, os.getpid())
    signal.signal(signal.SIGTERM, on_sigterm)


def release_sigterm() -> None:
    """Put back the SIGTERM handler the sweep found (after its last job)."""
    global _held
    held, _held = _held, None
    if threading.current_thread() is not threading.main_thread():
        return  # a thread's end of the sweep (the DDP launcher's watch): the process ends
    if held is not None and signal.getsignal(signal.SIGTERM) is on_sigterm:
        previous = held.previous
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def note_job(config: DictConfig) -> None:
    """Hydra's `on_job_start`: the job now starting is the one a SIGTERM stops."""
    if _held is None or _held.pid != os.getpid():
        return
    found: dict[str, Any] = {}
    for key in ("paths.output_dir", "callbacks.model_checkpoint.dirpath", "ckpt_path"):
        try:  # resolved now, with this job's Hydra config
            value = OmegaConf.select(config, key, default=None)
        except Exception:  # an interpolation only the job resolves (or fails on itself)
            value = None
        if value is not None:
            found[key] = str(value)
    output_dir = Path(str(config.hydra.runtime.output_dir))
    found.setdefault("paths.output_dir", str(output_dir))
    checkpoints = OmegaConf.create()
    for key, value in found.items():
        OmegaConf.update(checkpoints, key, value, force_add=True)
    _held.job = Job(int(config.hydra.job.num), output_dir, time.time(), checkpoints)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """The sweep's SIGTERM handler. Called by a handler of `fit` that found it (Lightning's,
    PreemptionCheckpoint's), it does nothing: they stop the job. In a forked process (a data
    worker), SIGTERM does what it did before the sweep: ends it."""
    if _held is None or _held.pid != os.getpid():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    if signal.getsignal(signal.SIGTERM) is not on_sigterm:
        return
    # A second SIGTERM must not cut short the record of the first (`end_terminated_sweep`).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SweepTerminated(signum)


def end_terminated_sweep(stop: BaseException) -> int | None:
    """After `stop` reached the entry point: when SIGTERM stopped the held sweep (this module's
    `SweepTerminated`, or Lightning's SIGTERMException out of a job, which the task wrapper said
    in one line), or a Ctrl-C outside a job's task (a bare KeyboardInterrupt), record the job it
    stopped and the jobs left, say so, and return the exit code (143; 130 for a Ctrl-C); None for
    anything else, or a stop already recorded (a preemption's)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    held = _held
    interrupted = isinstance(stop, KeyboardInterrupt)
    terminated = isinstance(stop, SweepTerminated) or interrupted
    if held is None or held.pid != os.getpid():
        return None
    if not (terminated or isinstance(stop, SIGTERMException)):
        return None
    ended = "not_run" in read_sweep_file(held.sweep_dir)  # a preempted or interrupted job
    if ended and (interrupted or not terminated):  # ended the sweep (`end_sweep_early`)
        return None
    # A second Ctrl-C or SIGTERM: the record whole first; then SIGTERM's handler as before the
    # sweep (its own is released).
    after = {signal.SIGTERM: held.previous}
    with signals_held_off(signal.SIGINT, signal.SIGTERM, after=after):
        release_sigterm()
        return record_stop(held, stop, interrupted, terminated)


def record_stop(held: HeldSweep, stop: BaseException, interrupted: bool, terminated: bool) -> int:
    """`end_terminated_sweep`'s record and line, and the exit code."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    sweep_dir, config = held.sweep_dir, saved_sweep(held.sweep_dir)
    num, output_dir, resume = job_stopped(held)
    code = stop.code if isinstance(stop, SIGTERMException) and isinstance(stop.code, int) else None
    if not terminated and output_dir is not None:  # the job said how it stopped: the sweep's line
        why = "terminated by SIGTERM outside the training steps"
        cause = "terminated by SIGTERM"
        end_sweep_early(sweep_dir, num, output_dir, why, resume, held.entry_module, cause)
        return code or TERMINATED_EXIT_CODE
    jobs = planned_jobs(config) if config is not None else None
    left = jobs[num + 1 :] if jobs is not None else []
    trials = raw(config, "hydra.sweeper.n_trials") if config is not None else None
    trials_left = max(int(trials) - num - 1, 0) if isinstance(trials, int) else 0
    cause = "interrupted" if interrupted else "terminated by SIGTERM"
    if output_dir is not None:
        why = INTERRUPTED if interrupted else cause
        why += "" if resume or interrupted else " before it saved a checkpoint"
        record_job(sweep_dir, num, output_dir, False, why, resume)
    record_cut_short(sweep_dir, left, trials_left)
    line = terminated_line(
        held, num, output_dir is not None, resume, config, left, trials_left, cause
    )
    print(f"error: {line}", file=sys.stderr, flush=True)
    if interrupted:
        return INTERRUPTED_EXIT_CODE
    return code or TERMINATED_EXIT_CODE


def job_stopped(held: HeldSweep) -> tuple[int, Path | None, str]:
    """The job SIGTERM stopped: its number, folder and how to resume it ("" if it saved
    nothing); with no folder, the last job that ended (-1: none), the stop between two jobs."""
    recorded = {record.num for record in read_ledger(held.sweep_dir)}
    job = held.job
    if job is not None and job.num not in recorded:
        saved = resume_after_stop(job.checkpoints, job.started)
        # A sweep's job resumes with resume=<its folder>, which restores the sweep's overrides
        # (after the sweep, resume_after_stop may read another Hydra config than the job's).
        resume = f"resume with {override_arg('resume', job.output_dir)}" if saved else ""
        return job.num, job.output_dir, resume
    last = job.num if job is not None else -1
    started = started_folder(held.sweep_dir, last + 1)  # by Hydra, before the job's own start
    return (last + 1, started, "") if started is not None else (last, None, "")


def started_folder(sweep_dir: Path, num: int) -> Path | None:
    """The folder of this sweep's job `num`, if Hydra made it (its `.hydra/hydra.yaml` names
    that job, and it is not an earlier sweep's, unchanged)."""
    before = read_sweep_file(sweep_dir).get(BEFORE)
    before = before if isinstance(before, dict) else {}
    for saved in sweep_dir.glob("**/.hydra/hydra.yaml"):
        folder = saved.parent.parent
        earlier = earlier_job(sweep_dir, folder, before)
        if saved_job(folder)[0] == num and (earlier is None or earlier[1]):
            return folder
    return None


def terminated_line(
    held: HeldSweep,
    num: int,
    in_job: bool,
    resume: str,
    config: DictConfig | None,
    left: list[list[str]],
    trials_left: int,
    stopped_by: str = "terminated by SIGTERM",
) -> str:
    """The one line of a sweep SIGTERM (or a Ctrl-C: `stopped_by`) stopped at job `num`
    (`in_job`), or after it."""
    sweep_dir, entry = held.sweep_dir, held.entry_module
    if in_job:
        cause = f"{stopped_by}; {resume}" if resume else stopped_by
        if left or trials_left:
            return not_run_line(sweep_dir, num, left, trials_left, entry, config, cause, resume)
        start = f"the sweep under {sweep_dir} was cut short at its last job, {num} ({cause})"
        jobs = planned_jobs(config) if config is not None else None
        if resume or not jobs:
            return f"{start}: {'resume it' if resume else 'run it again'} to complete the sweep"
        return f"{start}: run it again with {rerun_command([jobs[num]], entry, config, sweep_dir)}"
    if num < 0:
        start = f"the sweep under {sweep_dir} was {stopped_by} before its first job"
        if not left and not trials_left:
            return f"{start}: run it again"
    else:
        start = f"the sweep under {sweep_dir} was cut short after job {num} ({stopped_by})"
        if not left and not trials_left:
            return f"{start}, its last: every job ran (see python -m lmtrain.report {sweep_dir})"
    return not_run_line(sweep_dir, num, left, trials_left, entry, config, start=start)


@contextmanager
def signals_held_off(
    *signums: signal.Signals, after: dict[signal.Signals, Any] | None = None
) -> Iterator[None]:
    """While a sweep's end is recorded (its ledger, a line; a few small files): `signums` are
    ignored rather than cutting the record short with a traceback (exit 1), then put back as
    they were (or to `after`'s handler); the process ends right after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the DDP launcher's watch: the process exits right after
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in {**previous, **(after or {})}.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
