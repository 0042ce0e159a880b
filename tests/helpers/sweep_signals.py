"""A real signal to a basic-launcher sweep's own process, from a Hydra callback, at a chosen point
between or in its jobs; and what the sweep recorded (its ledger, its report)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tests.helpers.cli import run_cli, tiny_cli


class SignalAt(Callback):
    """Sends `signum` (SIGTERM, or SIGINT with Python's own handler, as a terminal's Ctrl-C
    finds it: a pytest-xdist worker, and so the command it starts, ignores SIGINT) to this
    process as job `num` starts (before its task) or, with `after=true`, once it has ended
    (before the next job is composed)."""

    def __init__(self, num: int, after: bool = False, signum: str = "SIGTERM") -> None:
        self.num, self.after, self.signum = num, after, signal.Signals[signum]

    def send(self) -> None:
        if self.signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), self.signum)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.after and config.hydra.job.num == self.num:
            self.send()

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.after and config.hydra.job.num == self.num:
            self.send()


def signal_sweep(
    tmp_path: Path, data_dir: Path, signum: str, num: int, after: bool, *more: str
) -> Any:
    """A tiny 2-step sweep into tmp_path/sweep that gets `signum` at job `num` (`SignalAt`)."""
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    sent = [
        f"+hydra.callbacks.signal._target_={__name__}.SignalAt",
        f"+hydra.callbacks.signal.num={num}",
        f"+hydra.callbacks.signal.after={str(after).lower()}",
        f"+hydra.callbacks.signal.signum={signum}",
    ]
    return run_cli("train", "-m", *cli, *sent, *more, f"hydra.sweep.dir={tmp_path / 'sweep'}")


def ledger(sweep: Path) -> dict:
    """The sweep's own record (`lmtrain.utils.sweep_ledger`)."""
    return json.loads((sweep / ".jobs" / "sweep.json").read_text())


def not_run_values(sweep: Path, key: str) -> list[list[str]]:
    """The `key=` override of each job the ledger notes as not run (it keeps each one's all)."""
    return [[o for o in job if o.startswith(f"{key}=")] for job in ledger(sweep)["not_run"]]


def report(sweep: Path) -> str:
    """`python -m lmtrain.report <sweep>`'s report.md (the command must succeed)."""
    out = run_cli("report", str(sweep))
    assert out.returncode == 0, out.stderr[-3000:]
    return (sweep / "report.md").read_text()
