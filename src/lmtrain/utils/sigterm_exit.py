"""The line a SIGTERM outside training's steps ends a command with, and the handler that lets
lmtrain.eval, generate and export end that way at all.

train handles SIGTERM itself: in its steps a preemption saves (`callbacks.preemption`), and
Lightning's own handler raises `SIGTERMException` around them (setup, the final validation).
eval's validation has Lightning's handler too, but its line spoke of resuming a run with
`overwrite_run=true`, a key eval refuses; generate and export had none, so a SIGTERM ended them
with exit 143 and no line, an export's temporary folder left beside out_dir (red team
rev_sig30). While those three run, a SIGTERM raises the same `SIGTERMException`, which
`task_wrapper` reports in one line; an export's temporary folder goes on the way out.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from lightning.pytorch.utilities.exceptions import SIGTERMException

from lmtrain.utils.resume_hints import resume_hint

TERMINATED_EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process SIGTERM ended


@contextmanager
def sigterm_raises(task: str) -> Iterator[None]:
    """Run `task` (the entry point's function name) with SIGTERM raising SIGTERMException; train
    keeps its own handling (Lightning composes its handler with the one it finds, and one that
    raised in a training step would cut the preemption's save). Only over the default action:
    a handler already there (submitit's, which requeues a preempted job; a caller's) stays, and
    signals are the main thread's (an export called from a worker thread changes nothing)."""
    if (
        task == "train"
        or threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # submitit's, a caller's own
    ):
        yield
        return
    owner = os.getpid()

    def raise_terminated(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked worker (a tokenizer pool's): ends as it would have
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise SIGTERMException(TERMINATED_EXIT_CODE)

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def terminated_line(task: str, folder: str) -> str:
    """What a SIGTERM outside training's steps left, and how to go on: train's run `folder`
    resumes from any checkpoint in it; the other commands wrote nothing to go on from."""
    if task != "train":
        return f"terminated by SIGTERM before {task} finished: run the command again"
    if any((Path(folder) / "checkpoints").glob("*.ckpt")):  # an FSDP run's last.ckpt: a folder
        # A sweep's job (or a run resumed so) resumes with resume=<its folder> (resume_hint).
        hint = resume_hint(Path(folder) / "checkpoints" / "last.ckpt")
        return (
            "terminated by SIGTERM outside the training steps: nothing was saved after the last "
            f"checkpoint; {hint}"
        )
    return (  # no PreemptionCheckpoint (callbacks=none) and no checkpoint yet
        f"terminated by SIGTERM: nothing was saved in {folder}, so the run cannot be resumed: "
        "start it again (in the same folder with overwrite_run=true)"
    )
