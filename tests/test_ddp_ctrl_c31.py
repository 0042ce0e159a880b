"""A terminal's Ctrl-C while a `trainer=ddp_cpu` run starts its ranks ends it as one in training
does: `interrupted`, once, exit 130 (#31).

Lightning's launcher (rank 0) starts rank 1 and a thread that kills every process when a rank
dies. A Ctrl-C that found rank 1 importing ended it with 130 (its own `interrupted` line), while
rank 0, waiting for it at the rendezvous, could not act on its own SIGINT: the thread killed it,
exit -9 (137 in a shell, which reads as out-of-memory), with Lightning's zombie line; in a
sweep's job it was left waiting at the rendezvous for torch's timeout.
Real processes: two gloo ranks, SIGINT to their process group as a terminal sends it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

from tests.helpers.cli import tiny_cli
from tests.helpers.interrupts import LONG_JOB, interrupt, trained, wait_for_rank_one


def ctrl_c_as_rank_one_starts(command: list[str]) -> tuple[int, str]:
    """Run `python -m lmtrain.train <command>`, send SIGINT to its process group as soon as
    rank 1 exists (it is importing torch and Lightning for seconds more), and return its exit
    code and stderr."""
    started = lambda pid: wait_for_rank_one(psutil.Process(pid), 180) is not None  # noqa: E731
    return interrupt(command, started, settle=0.5, ready_takes_pid=True)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")
def test_a_ctrl_c_as_rank_one_starts_is_one_line_and_exit_130(
    tmp_path: Path, data_dir: Path
) -> None:
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2", "logger=csv")
    code, err = ctrl_c_as_rank_one_starts([*overrides, "trainer.max_steps=100000"])
    assert code == 130, err[-3000:]
    assert err.count("interrupted") == 1 and err.strip().splitlines()[-1] == "interrupted", err
    assert "zombies" not in err and "Traceback" not in err, err[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")
def test_a_ctrl_c_as_a_sweep_jobs_rank_one_starts_ends_the_sweep(
    tmp_path: Path, data_dir: Path
) -> None:
    # The sweep's process, held at the rendezvous, waited there for torch's 30-minute timeout.
    sweep = tmp_path / "sweep"
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2", "logger=csv")
    swept = ["model.optimizer.lr=0.002,0.001", f"hydra.sweep.dir={sweep}"]
    code, err = ctrl_c_as_rank_one_starts(["-m", *overrides, *swept, "trainer.max_steps=100000"])
    assert code == 130, err[-3000:]
    assert "zombies" not in err and "Traceback" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith(
        f"error: the sweep under {sweep} was cut short at job 0 (interrupted): 1 job(s) did "
        "not run (job 1 (model.optimizer.lr=0.001)): run job 0 and them with python -m "
    ), err[-3000:]
    job = json.loads((sweep / ".jobs" / "0.json").read_text())
    assert (job["ok"], job["why"]) == (False, "interrupted (Ctrl-C)"), job


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups as on Linux")
def test_a_ctrl_c_in_a_ddp_sweep_jobs_training_is_recorded_once(
    tmp_path: Path, data_dir: Path
) -> None:
    # Past the rendezvous the sweep's process ends on its own Ctrl-C: the launcher's watch must
    # not cut its record short or write a second one (review of #31).
    sweep = tmp_path / "sweep"
    overrides = tiny_cli(tmp_path, data_dir, "trainer=ddp_cpu", "trainer.devices=2", *LONG_JOB)
    swept = ["model.optimizer.lr=0.002,0.001", f"hydra.sweep.dir={sweep}"]
    code, err = interrupt(["-m", *overrides, *swept], lambda: trained(sweep), settle=1.0)
    assert code == 130, err[-3000:]
    assert err.count("error: the sweep under") == 1, err[-3000:]
    assert "zombies" not in err and "Traceback" not in err, err[-3000:]
    job = json.loads((sweep / ".jobs" / "0.json").read_text())
    assert (job["ok"], job["why"]) == (False, "interrupted (Ctrl-C)"), job
