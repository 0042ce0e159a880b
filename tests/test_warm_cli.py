"""A command run as a fork of the warm server (`tests.helpers.warm_cli`) ends as the same command
in a new interpreter does: the same files, numbers, output, exit codes and tracebacks."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


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
        line = assert_one_line_error(refused, "data.block_size")
        ended[way] = (metrics["val/loss"], metrics["trainer/global_step"], checkpoints, line)
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
        run_cli("train", *cli, "trainer.max_steps=1000000", timeout=20)
    assert time.monotonic() - started < 40
