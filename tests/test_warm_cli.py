"""A command run as a fork of the warm server (`tests.helpers.warm_cli`) ends as the same command
in a new interpreter does: the same files, numbers, output, exit codes and tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import command_environment, run_cli, tiny_cli
from tests.helpers.environment import SESSION_ENVIRONMENT
from tests.helpers.warm_client import run_warm


def test_a_run_and_a_refusal_end_as_in_a_new_interpreter(tmp_path: Path) -> None:
    ended, imports = {}, {}
    for way in ("warm", "fresh"):
        run_dir = tmp_path / way
        cli = tiny_cli(tmp_path, tmp_path / f"data_{way}", "logger=csv")
        result = run_cli("train", *cli, f"hydra.run.dir={run_dir}", fresh=way == "fresh")
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
        refused_dir = f"hydra.run.dir={tmp_path / f'{way}_refused'}"
        refused = run_cli("train", *cli, refused_dir, "data.block_size=0", fresh=way == "fresh")
        assert_one_line_error(refused, "data.block_size")
        # The whole of stderr: runpy warned in every fork that the module was imported already.
        stderr = refused.stderr
        ended[way] = (metrics["val/loss"], metrics["trainer/global_step"], checkpoints, stderr)
        imports[way] = metrics["time/startup/imports_s"]
    assert ended["warm"] == ended["fresh"]
    # The fork imported nothing: it was not a new interpreter in disguise.
    assert imports["warm"] < 0.1 < imports["fresh"], imports


def test_exit_codes_and_an_uncaught_exception_end_as_in_a_new_interpreter() -> None:
    # A module that runs and returns (exit 0), and one that does not exist: `python -m` exits 1
    # with the import error, the fork with its traceback.
    for module, code in (("utils.gc_pause", 0), ("utils.no_such_module", 1)):
        warm, fresh = (run_cli(module, fresh=fresh) for fresh in (False, True))
        assert warm.returncode == fresh.returncode == code, (warm.stderr, fresh.stderr)
        if code:
            for result in (warm, fresh):
                assert "No module named lmtrain.utils.no_such_module" in result.stderr


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    cli = tiny_cli(tmp_path, tmp_path / "data", f"hydra.run.dir={tmp_path / 'run'}", "logger=csv")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("train", *cli, "trainer.max_steps=1000000", timeout=8)
    assert time.monotonic() - started < 28


def test_a_variable_a_library_set_during_a_test_does_not_send_later_commands_to_new_ones(
    tmp_path: Path,
) -> None:
    """scikit-learn, imported in a test through lm-eval, sets KMP_INIT_AT_FORK. The worker's
    server, started by that test's first command, took the command's environment as its own, and
    every later command of the worker (the variable gone) ran as a new interpreter, silently:
    twice the time, and this file's first test failed in one combination of files."""
    two_tests = tmp_path / "test_two_commands.py"
    two_tests.write_text(
        textwrap.dedent(
            """
            from tests.helpers import warm_client
            from tests.helpers.cli import run_cli

            def test_first(monkeypatch):
                monkeypatch.setenv("KMP_INIT_AT_FORK", "FALSE")
                assert run_cli("utils.gc_pause").returncode == 0

            def test_second():
                forks = warm_client._server.forks
                assert run_cli("utils.gc_pause").returncode == 0
                assert warm_client._server.forks == forks + 1
            """
        )
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's options
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(two_tests)]
    command += ["-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path)]
    result = subprocess.run(
        command, cwd=ROOT, env=SESSION_ENVIRONMENT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 passed" in result.stdout, result.stdout[-3000:]


def test_a_script_sees_its_folder_arguments_and_thread_count_as_in_a_new_interpreter(
    tmp_path: Path,
) -> None:
    """`python <script.py>` puts the script's folder first on sys.path (the benchmark scripts
    import their siblings) and torch reads OMP_NUM_THREADS as it starts: a fork applies both."""
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "sibling.py").write_text("NAME = 'sibling'\n")
    shown = folder / "show.py"
    shown.write_text(
        "import os, sys, torch\nimport sibling\n"
        "print(sibling.NAME, sys.path[0], sys.argv, os.getcwd(), torch.get_num_threads())\n"
        "sys.exit(3)\n"
    )
    env = {**command_environment(os.environ), "OMP_NUM_THREADS": "1"}
    command = [str(shown), "--flag"]
    server_env = command_environment(SESSION_ENVIRONMENT)
    warm = run_warm(command, env, 60, server_env, cwd=tmp_path)
    assert warm is not None  # it ran as a fork
    fresh = subprocess.run(
        [sys.executable, *command], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (warm.returncode, warm.stdout) == (fresh.returncode, fresh.stdout) == (3, fresh.stdout)
    assert fresh.stdout.split()[-1] == "1" and fresh.stdout.startswith("sibling"), fresh.stdout
