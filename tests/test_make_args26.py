"""The make targets' user arguments as typed: a `$` in ARGS (and the other variables) reaches the
shell, not make; a `-f` path with a space, and a `.venv` that cannot run, are refused in one line
before anything is installed or run."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers import ROOT
from tests.helpers.cli import tiny_cli


def make(
    *args: str, makefile: Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`make -f <makefile> <args>` run in `cwd`, W&B offline."""
    command = ["make", "--no-print-directory", "-f", str(makefile), *args]
    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300
    )


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def scratch_checkout(folder: Path) -> Path:
    """The Makefile and pyproject.toml of this checkout copied into `folder`, no .venv yet."""
    folder.mkdir(parents=True)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, folder / name)
    return folder / "Makefile"


def test_make_train_passes_a_dollar_in_args_to_the_shell_as_typed(tmp_path: Path) -> None:
    """`make train ARGS='hydra.run.dir=$HOME/run'` trained into `OME/run` in the current folder:
    make read `$H` as its own (empty) variable. The text now reaches the shell as typed: the
    variable expands there, and a single-quoted Hydra `${oc.env:...}` reaches Hydra whole."""
    tiny = tiny_cli(tmp_path, tmp_path / "data", "logger=csv")
    typed = " ".join(shlex.quote(override) for override in tiny)
    typed += """ hydra.run.dir=$RUNS26/run 'seed="${oc.decode:${oc.env:SEED26}}"'"""
    env = {"RUNS26": str(tmp_path / "runs"), "SEED26": "7"}
    result = make("train", f"ARGS={typed}", makefile=ROOT / "Makefile", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "run"
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    assert 'seed="${oc.decode:${oc.env:SEED26}}"' in overrides, overrides
    assert not (tmp_path / "UNS26").exists()


def test_make_dry_runs_show_every_user_argument_as_typed() -> None:
    """ARGS of eval, PYTEST_ARGS, BENCH_ARGS, DATA, NANOGPT and SWEEP lost their `$H` the same way;
    each now reaches the recipe's shell as typed (`make -n`: nothing run)."""
    cases = {
        ("eval", "ARGS=ckpt_path=$HOME/last.ckpt"): "-m lmtrain.eval ckpt_path=$HOME/last.ckpt",
        ("test", "PYTEST_ARGS=-k $HOME"): "--dist loadfile -k $HOME",
        ("bench", "BENCH_ARGS=--out $HOME/b.json"): "--check-args --out $HOME/b.json",
        ("bench", "DATA=$HOME/input.txt"): 'bench_switches.py --data "$HOME/input.txt"',
        ("bench", "NANOGPT=$HOME/nanoGPT"): '--recipe fast --nanogpt "$HOME/nanoGPT"',
        ("report", "SWEEP=$HOME/sweep"): '-m lmtrain.report "$HOME/sweep"',
    }
    for args, expected in cases.items():
        dry = subprocess.run(
            ["make", "--no-print-directory", "-n", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert dry.returncode == 0, (args, dry.stderr)
        assert expected in " ".join(dry.stdout.split()), (args, dry.stdout)


def test_make_refuses_a_makefile_path_with_a_space_in_one_line(tmp_path: Path) -> None:
    """`make -f "<path with a space>/Makefile" train` stopped at "No rule to make target
    'é/repo/pyproject.toml'" (make splits the path at its spaces), `help` at a grep error. Every
    target now stops at once with one line naming the path and the way round; make run in that
    folder still works."""
    makefile = scratch_checkout(tmp_path / "my runs é" / "repo")
    for args in (["-n", "train"], ["help"], ["train"]):
        result = make(*args, makefile=makefile, cwd=tmp_path)
        assert result.returncode != 0, (args, result.stdout)
        lines = errors(result)
        assert len(lines) == 1, (args, result.stderr)
        assert str(makefile) in lines[0] and "cd to the checkout" in lines[0], lines[0]
        assert "No rule" not in result.stderr, result.stderr
    assert not (makefile.parent / ".venv").exists()

    inside = make("-n", "train", makefile=Path("Makefile"), cwd=makefile.parent)
    assert inside.returncode == 0, inside.stderr
    assert ".venv/bin/python -m lmtrain.train" in inside.stdout, inside.stdout


def test_make_names_a_venv_that_cannot_run_before_installing(tmp_path: Path) -> None:
    """A `.venv` link to a venv that is gone gave "File exists"; a venv whose Python was removed
    gave "No such file" at every target. Each now stops at one line naming it and what to do,
    before any install, and the .venv is left as it was."""
    dangling = scratch_checkout(tmp_path / "dangling")
    (dangling.parent / ".venv").symlink_to(tmp_path / "gone-venv")
    result = make("train", makefile=dangling, cwd=dangling.parent)
    assert result.returncode != 0
    lines = errors(result)
    assert len(lines) == 1 and "links to" in lines[0] and "make install" in lines[0], result.stderr
    assert (dangling.parent / ".venv").is_symlink()

    for installed in (False, True):
        makefile = scratch_checkout(tmp_path / f"python-gone-{installed}")
        bin_dir = makefile.parent / ".venv" / "bin"
        bin_dir.mkdir(parents=True)
        (bin_dir / "python3").symlink_to(tmp_path / "gone-python" / "python3")
        (bin_dir / "python").symlink_to("python3")
        if installed:  # the marker of an install that worked before the Python went
            (makefile.parent / ".venv" / ".installed").touch()
        result = make("train", makefile=makefile, cwd=makefile.parent)
        assert result.returncode != 0
        lines = errors(result)
        assert len(lines) == 1, (installed, result.stderr)
        assert "bin/python cannot run" in lines[0] and "rm -rf" in lines[0], lines[0]
        assert "No such file" not in result.stderr, result.stderr
        assert (bin_dir / "python").is_symlink()
