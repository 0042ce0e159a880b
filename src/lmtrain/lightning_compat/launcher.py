"""Lightning's DDP launcher: which processes a dying rank ends, and rank 0 outliving its ranks."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from lmtrain.utils.interrupt_exit import INTERRUPTED_EXIT_CODE, say_interrupted

log = logging.getLogger(__name__)
RANKS_GRACE_SECONDS = 30  # how long rank 0 waits for all its ranks to end, in all
# How long after a rank ended on a Ctrl-C this process may take to end on its own.
INTERRUPT_GRACE_SECONDS = 5


@contextlib.contextmanager
def ddp_launcher_observes(
    job_only: bool, on_interrupt: Callable[[], None] | None = None
) -> Iterator[None]:
    """While inside, watch the ranks Lightning's launcher starts; on exit, leave the process group
    and wait for them.

    Lightning's launcher (rank 0) starts ranks > 0 and a thread that kills every rank and the
    main process when one dies. `job_only` keeps the main process alive (in a multirun, the
    whole sweep) and ends this job's ranks only. A rank ended by a Ctrl-C while this process waits
    at the rendezvous ends it too, after `on_interrupt` (a sweep records its end). On exit, whatever
    the outcome: the thread stops (a rank's exit code is its own business now: its 1 after rank
    0's error would kill rank 0 mid-way), this process leaves its process group (ranks waiting
    on it in a gloo collective fail at once; NCCL's notice only at its timeout), and rank 0
    waits for its ranks, 30 s at most in all, then kills them. A rank > 0 is killed by the
    kernel when rank 0 exits (`lmtrain.utils.parent_death`): a rank 0 that ended first on an
    error of its own (a full disk at its checkpoint save) killed the others before they could
    print why they stopped. Buys: both. Public alternative: none (a module-level function starts
    the thread, and the class is private).
    """
    from lightning.fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
    from lightning.pytorch.strategies.launchers import subprocess_script

    class RankObserver(_ChildProcessObserver):
        interrupted_at: float | None = None

        def _run(self) -> bool:  # after the job, a rank's exit code is its own business
            if self._finished:
                return True
            if self.held_at_rendezvous():
                self.end_interrupted()  # once the grace is over
                return self._finished
            return super()._run()

        def held_at_rendezvous(self) -> bool:
            """Whether a rank ended by a Ctrl-C (130, or SIGINT itself) before the process group
            formed: this process got the Ctrl-C too, and cannot act on it while it waits at the
            ranks' rendezvous for the rank that is gone (Lightning's watch killed it then: exit
            -9, its zombie line; in a sweep it waited for torch's 30-minute timeout). Past the
            rendezvous it acts on its own Ctrl-C (Lightning's shutdown, the sweep's record)."""
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return False
            for proc in self._child_processes:
                proc.poll()
            codes = [proc.returncode for proc in self._child_processes]
            if any(code in (INTERRUPTED_EXIT_CODE, -signal.SIGINT) for code in codes):
                return True
            # A rank whose Ctrl-C cut torch's import short in native code aborts (-6): that
            # is this run's Ctrl-C when this process got one too (`ctrl_c`, below).
            return any(code for code in codes) and ctrl_c.seen()

        def end_interrupted(self) -> None:
            """After a grace for this process to end on its own: end it as a Ctrl-C does,
            `interrupted` (and a sweep's record: `on_interrupt`), exit 130."""
            now = time.monotonic()
            self.interrupted_at = self.interrupted_at or now
            if now - self.interrupted_at < INTERRUPT_GRACE_SECONDS or self._finished:
                return
            for proc in self._child_processes:
                if proc.poll() is None:
                    proc.send_signal(self._termination_signal)
            try:
                say_interrupted()
                if on_interrupt is not None:  # a sweep's job: the sweep's record, and its line
                    on_interrupt()
            except Exception:  # the exit must come: the main thread cannot leave its call
                log.exception("the record of the interrupted run failed")
            finally:
                os._exit(INTERRUPTED_EXIT_CODE)

        def _terminate_all(self) -> None:
            if self._finished:
                return
            if not job_only:
                super()._terminate_all()  # Lightning's: the ranks and this process
                return
            for proc in self._child_processes:
                proc.send_signal(self._termination_signal)

    observers: list[RankObserver] = []

    def launch_observer(child_processes: list) -> None:
        observers.append(RankObserver(main_pid=os.getpid(), child_processes=child_processes))
        observers[-1].start()

    original: Callable[..., Any] = subprocess_script._launch_process_observer
    subprocess_script._launch_process_observer = launch_observer
    ctrl_c = CtrlCSeen.start()
    try:
        yield
    finally:
        subprocess_script._launch_process_observer = original
        for observer in observers:
            observer._finished = True
        ctrl_c.stop()
        leave_process_group()
        deadline = time.monotonic() + RANKS_GRACE_SECONDS
        for proc in (proc for observer in observers for proc in observer._child_processes):
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class CtrlCSeen:
    """Whether this process got SIGINT, told from another thread while the main thread is held
    in a call (the rendezvous) where Python's handler cannot run yet: Python's C-level handler
    writes each signal's number to the wakeup fd (`signal.set_wakeup_fd`) as it arrives."""

    def __init__(self, read: int | None = None, write: int | None = None, old: int = -1) -> None:
        self.read, self.write, self.old, self.got = read, write, old, False

    @classmethod
    def start(cls) -> CtrlCSeen:
        if threading.current_thread() is not threading.main_thread():
            return cls()  # only the main thread may set it; seen() is then always False
        read, write = os.pipe()
        os.set_blocking(read, False)
        os.set_blocking(write, False)
        return cls(read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))

    def seen(self) -> bool:
        if self.read is not None and not self.got:
            with contextlib.suppress(OSError):  # nothing written yet (EAGAIN), or closed
                self.got = signal.SIGINT in os.read(self.read, 512)
        return self.got

    def stop(self) -> None:
        if self.read is None or self.write is None:
            return
        signal.set_wakeup_fd(self.old)
        os.close(self.read)
        os.close(self.write)
        self.read = self.write = None


def leave_process_group() -> None:
    """Destroy this process's process group, if any (every rank, whoever started it). A group
    that cannot be destroyed (broken by the error being raised) is left to the process's exit:
    its error would replace the run's own line."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception as err:
            log.debug("the process group could not be destroyed: %s", err)
