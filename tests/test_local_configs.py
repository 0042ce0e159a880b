"""`local=<name>` must name a config of the `local` group in some folder of the search path.

Red team: the defaults' `- optional local: default` let Hydra drop a missing option, one typed
on the command line too: `local=mybx` with only local/mybox.yaml trained without the machine's
settings and exited 0. The machine's configs live outside the repository here, as a user's
would: in the `local/` folder of a `hydra.searchpath` entry (or `--config-dir`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


def machine_configs(tmp_path: Path) -> Path:
    """A folder whose local/mybox.yaml sets the seed, as a machine's settings would."""
    folder = tmp_path / "machine"
    (folder / "local").mkdir(parents=True)
    (folder / "local" / "mybox.yaml").write_text("# @package _global_\nseed: 7\n")
    return folder


def test_a_misspelt_local_is_refused_naming_the_ones_there_are_and_the_right_one_applies(
    tmp_path: Path, data_dir: Path
) -> None:
    folder = machine_configs(tmp_path)
    run = tmp_path / "run"
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", f"hydra.run.dir={run}", "trainer.max_steps=1")
    searchpath = f"hydra.searchpath=[file://{folder}]"
    out = run_cli("train", *cli, searchpath, "local=mybx")
    assert out.returncode == 1
    assert_one_line_error(
        out,
        "local=mybx: no local/mybx.yaml in the config search path, whose local/ holds "
        f"mybox in {folder}: pass one of those",
    )
    assert not run.exists()  # refused before Hydra wrote .hydra/ and train.log there
    out = run_cli("train", *cli, searchpath, "local=mybox")
    assert out.returncode == 0, out.stderr[-3000:]
    assert yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["seed"] == 7


def test_generate_and_eval_refuse_a_local_of_no_config_given_with_config_dir(
    tmp_path: Path,
) -> None:
    folder = machine_configs(tmp_path)
    missing = tmp_path / "none.ckpt"  # never read: the choice is refused first
    for entry in ("generate", "eval"):
        run = tmp_path / entry
        out = run_cli(
            entry,
            "--config-dir",
            str(folder),
            "local=mybx",
            f"ckpt_path={missing}",
            f"hydra.run.dir={run}",
        )
        assert out.returncode == 1
        assert_one_line_error(out, "local=mybx: no local/mybx.yaml", f"mybox in {folder}")
        assert not run.exists()


def test_a_typed_local_default_with_no_default_yaml_is_refused(tmp_path: Path) -> None:
    """The optional default left alone is no choice; typed, it is one, and there is none."""
    if (ROOT / "configs" / "local" / "default.yaml").exists():
        pytest.skip("this checkout has a configs/local/default.yaml of its machine's")
    out = run_cli(
        "generate",
        "local=default",
        f"ckpt_path={tmp_path / 'none.ckpt'}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert out.returncode == 1
    assert_one_line_error(
        out, "local=default: no local/default.yaml in the config search path, whose local/ holds"
    )
