"""A SIGTERM to the command of a `hydra/launcher=slurm_local` sweep stops its jobs, as Ctrl-C does.

submitit's local executor runs each job under a controller process of its own, which outlives
the launcher's. A SIGTERM to the command (a scheduler, `timeout`, `docker stop`, `kill`) ended
the launcher at once, with exit 143 and no line; the jobs, reached by the same SIGTERM through
the process group, saved as on a preemption and were requeued by their controllers, so they
trained on, detached, after the command had returned, and wrote `ok: true` into a sweep whose
command had failed (red team rev_sig30).

Now the launcher catches the SIGTERM while its jobs run (`SigtermStop`): it writes a marker file
(`stop_marker`), which makes the jobs' requeue refuse (the launcher's `checkpoint`, in
`hydra_plugins.lmtrain_submitit_launcher`, raises submitit's UncompletedJobError, as a
requeue that cannot be made does), and passes the SIGTERM to each job's controller, which passes
it to the job: a training job saves `last.ckpt` at its next step, as a preemption does, and
ends. A job that has not ended `STOP_GRACE_S` seconds later (one still setting up, whose
SIGTERM submitit's handler only logs) is cancelled as a Ctrl-C cancels it (SIGINT, then SIGKILL
a second later). Then one `error:` line says which jobs to resume and how, and the command
exits 143. Jobs submitted to SLURM (`hydra/launcher=slurm`) run on, as after a Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from lmtrain.utils.override_text import override_arg
from lmtrain.utils.sigterm_exit import TERMINATED_EXIT_CODE
from lmtrain.utils.sweep_ledger import LEDGER, current_sweep, record_cut_short
from lmtrain.utils.sweep_sigterm import SweepTerminated  # a BaseException: nothing swallows it

# How long a job may take to save and end after the SIGTERM before it is cancelled.
STOP_GRACE_S = 60.0


def stop_marker(sweep_dir: Path) -> Path:
    """A file, new to this launch, whose presence tells the sweep's jobs not to requeue."""
    return sweep_dir / ".submitit" / f"stopped-{uuid.uuid4().hex}"


class SigtermStop:
    """Catches SIGTERM while the launcher submits and waits for its jobs (`watching`); the jobs
    submitted so far are noted in `jobs` (`submitting` holds a SIGTERM back while a batch is
    submitted, so that no started job goes unnoted)."""

    def __init__(self, sweep_dir: Path, marker: Path, local: bool) -> None:
        self.sweep_dir, self.marker, self.local = sweep_dir, marker, local
        self.jobs: list[tuple[int, Any]] = []  # (job number, submitit job)
        self.held, self.pending = False, False

    @contextlib.contextmanager
    def submitting(self) -> Iterator[None]:
        self.held = True
        try:
            yield
        finally:
            self.held = False
        if self.pending:
            raise SweepTerminated

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.held:
            self.pending = True
            return
        raise SweepTerminated

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Run the launch; a SIGTERM in it stops the jobs, prints one line, exits 143."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, self._handle)
        try:
            yield
        except SweepTerminated:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one while the jobs save
            if self.local:
                self.stop_local_jobs()
                record_cut_short(self.sweep_dir, [])  # the sweep's end: the report says so
            print(f"error: {self.line()}", file=sys.stderr, flush=True)
            raise SystemExit(TERMINATED_EXIT_CODE) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop_local_jobs(self) -> None:
        """Refuse the jobs' requeue, pass them the SIGTERM, and wait for them to end."""
        with contextlib.suppress(OSError):  # without it a job would requeue: still stopped below
            self.marker.parent.mkdir(parents=True, exist_ok=True)
            self.marker.write_text("SIGTERM\n")
        # submitit's LocalJob keeps its controller's Popen; its `job_id` is the controller's pid.
        controllers = [getattr(job, "_process", None) for _, job in self.jobs]
        controllers = [c for c in controllers if c is not None]
        for controller in controllers:
            with contextlib.suppress(OSError):
                controller.send_signal(signal.SIGTERM)  # its handler passes it to the job
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(c.poll() is None for c in controllers):
            time.sleep(0.2)
        late = [c for c in controllers if c.poll() is None]
        for controller in late:
            with contextlib.suppress(OSError):  # submitit's cancel: the controller ends its job
                controller.send_signal(signal.SIGINT)
        for controller in late:
            try:
                controller.wait(timeout=30)
            except Exception:  # TimeoutExpired: its job was SIGKILLed by then
                controller.kill()
                controller.wait()

    def line(self) -> str:
        """What the SIGTERM stopped, and how to go on."""
        start = f"the sweep under {self.sweep_dir} was stopped by SIGTERM"
        if not self.local:
            return (
                f"{start}: the jobs submitted to SLURM run on (scancel them to stop them); "
                f"`python -m lmtrain.report {self.sweep_dir}` shows how they ended"
            )
        if not self.jobs:
            return f"{start} before any job started: run the sweep again"
        unfinished = [(num, job_folder(self.sweep_dir, num)) for num, _ in self.jobs]
        unfinished = [(num, folder) for num, folder in unfinished if folder != ""]
        if not unfinished:
            return f"{start} after its jobs had finished: see `python -m lmtrain.report`"
        shown = "; ".join(
            f"job {num}: python -m lmtrain.train {override_arg('resume', folder)}"
            if folder
            else f"job {num}"
            for num, folder in unfinished
        )
        return (
            f"{start}: its jobs were stopped (each one that was training saved last.ckpt) and not "
            f"requeued; resume each ({shown}); `python -m lmtrain.report {self.sweep_dir}` "
            "shows how each ended"
        )


def job_folder(sweep_dir: Path, num: int) -> str | None:
    """Job `num`'s folder as its ledger record names it; "" for a job that finished (nothing to
    resume), None for one that left no record (stopped before it ended its own way)."""
    try:
        record = json.loads((sweep_dir / LEDGER / f"{num}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("folder"), str):
        return None
    if record.get("sweep") != current_sweep(sweep_dir):  # an earlier sweep's, in this folder
        return None
    if record.get("ok") is True:
        return ""
    folder = Path(record["folder"])
    return str(folder if folder.is_absolute() else sweep_dir / folder)
