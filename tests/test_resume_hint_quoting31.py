"""The resume command lmtrain prints pastes into a shell when the run folder's path holds a
space, `,`, `=`, a quote, `$` or a non-ASCII letter (red team r_path31, finding 3).

It was printed raw (`resume with ckpt_path=last hydra.run.dir=/x/a b,c/run`): Hydra's lexer
refused the pasted text, or read the `,` as a sweep. Each check here goes through a real shell
(`bash -c`) and Hydra's own override parser, or a real run stopped by SIGTERM and resumed.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lightning.pytorch import Callback as LightningCallback
from lightning.pytorch import LightningModule, Trainer

from lmtrain.utils.override_text import hydra_quoted, override_arg
from lmtrain.utils.resume_hints import resume_hint
from tests.helpers import ROOT
from tests.helpers.cli import command_environment, run_cli, tiny_cli

# Prints the value Hydra parses from the override in argv[1], as repr().
PARSE = (
    "import sys; from hydra.core.override_parser.overrides_parser import OverridesParser; "
    "print(repr(OverridesParser.create().parse_override(sys.argv[1]).value()))"
)
ODD = [
    "/x/a b/run",
    "/x/a,b/run",
    "/x/a=b/run",
    "/x/it's/run",
    '/x/say "hi"/run',
    "/x/$x/run",
    "/x/dätä/run",
    "/x/c[1]/run",
    "/x/a b,c/run",
    "/x/both'\"/run",
    "/x/back\\'slash/run",
    "/x/trailing\\",
    "/x/semi;colon",
    "/x/a:~b",
    " /x/lead",
    "123",
]


def parsed_in_shell(argument: str) -> str:
    """What Hydra reads from `argument` pasted into bash as printed."""
    out = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(PARSE)} {argument}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, (argument, out.stderr[-2000:])
    return out.stdout.strip()


@pytest.mark.parametrize("key", ["hydra.run.dir", "resume", "ckpt_path"])
def test_each_odd_path_pasted_into_a_shell_is_read_back_by_hydra(key: str) -> None:
    for path in ODD:
        argument = override_arg(key, path)
        assert parsed_in_shell(argument) == repr(path), (path, argument)


def test_plain_paths_are_printed_as_before_and_odd_ones_in_hydra_quotes() -> None:
    plain = "/tmp/pytest-of-u/p-3/runs/2024-01-01_12-00-00.1/last.ckpt"
    for path in (plain, "/a/b_c/d-e/f:g+h@i%j"):
        assert override_arg("ckpt_path", path) == f"ckpt_path={path}"
    assert parsed_in_shell(override_arg("ckpt_path", plain)) == repr(plain)
    assert override_arg("hydra.run.dir", "/x/a b,c") == "\"hydra.run.dir='/x/a b,c'\""
    assert hydra_quoted("it's") == '"it\'s"'
    run = Path("/x/a b,c/run")
    assert resume_hint(run / "checkpoints" / "last.ckpt") == (
        "resume with ckpt_path=last \"hydra.run.dir='/x/a b,c/run'\""
    )
    other = run / "checkpoints" / "best-step=4.ckpt"
    assert resume_hint(other) == f"resume with \"ckpt_path='{other}'\""


def test_a_run_in_a_folder_with_a_space_and_a_comma_resumes_with_its_printed_command(
    tmp_path: Path, data_dir: Path
) -> None:
    run, pids = tmp_path / "a b,c" / "run", tmp_path / "pids"
    cli = tiny_cli(
        tmp_path,
        data_dir,
        "trainer.max_steps=6",
        "logger=csv",
        "callbacks.text_samples=null",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    pace = [
        "+callbacks.pace._target_=tests.helpers.faults.Pace",
        f"+callbacks.pace.dirpath={pids}",
        "+callbacks.pace.seconds=2",
    ]
    env = command_environment(os.environ)
    folder = f"hydra.run.dir={hydra_quoted(str(run))}"  # as Hydra takes it, no shell between
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmtrain.train", *cli, *pace, folder],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        last = run / "checkpoints" / "last.ckpt"
        while not ((pids / "rank0.pid").exists() and last.exists()):
            assert proc.poll() is None and time.monotonic() < deadline, "never saved"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 143, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: preempted by SIGTERM at step "), err[-3000:]
    printed = line.split("; resume with ", 1)[1]
    # Pasted as printed, after the run's command and its overrides.
    command = f"{shlex.quote(sys.executable)} -m lmtrain.train {shlex.join(cli)} {printed}"
    out = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, (printed, out.stderr[-3000:])
    assert printed == f"ckpt_path=last {override_arg('hydra.run.dir', run)}", line
    assert "Restoring states from the checkpoint" in out.stdout + out.stderr
    assert json.loads((run / "metrics.json").read_text())["trainer/global_step"] == 6


class SigtermAtFitEnd(LightningCallback):
    """SIGTERM to this process at the end of job 0's fit, not of its resume: the sweep's own
    handler ends it (`sweep_sigterm.job_stopped` says how to resume the job)."""

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if "sweep/0" in str(trainer.default_root_dir) and trainer.ckpt_path is None:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sweep_job_in_a_folder_with_a_space_and_a_comma_resumes_with_its_printed_command(
    tmp_path: Path, data_dir: Path
) -> None:
    sweep = tmp_path / "a b,c" / "sweep"
    cli = tiny_cli(tmp_path, data_dir, "trainer.max_steps=2", "logger=csv")
    term = [
        f"+callbacks.term._target_={__name__}.SigtermAtFitEnd",
        "model.optimizer.lr=0.003,0.002",
    ]
    out = run_cli("train", "-m", *cli, *term, f"hydra.sweep.dir={hydra_quoted(str(sweep))}")
    assert out.returncode == 143, out.stderr[-3000:]
    line = out.stderr.strip().splitlines()[-1]
    printed = line.split("(terminated by SIGTERM; resume with ", 1)[1].split("): ", 1)[0]
    # With the test's callback typed again (resume refuses a target the configs lack).
    command = f"{shlex.quote(sys.executable)} -m lmtrain.train {printed} ++{term[0][1:]}"
    env = command_environment(os.environ)
    resumed = subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, (printed, resumed.stderr[-3000:])
    assert printed == override_arg("resume", sweep / "0"), line
