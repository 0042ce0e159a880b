"""`--info config` (or all, defaults, defaults-tree) with `resume=` printed the composed defaults,
not the run's saved config, with exit 0, as `--cfg job resume=` did (tests/test_cfg_resume23.py);
`-p model` without `--cfg` was ignored by Hydra and the command trained the default config (red
team r_cfg31). Both are refused in one line, before Hydra starts."""

from __future__ import annotations

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli


@pytest.mark.parametrize("info", ["config", "all", "defaults", "defaults-tree"])
def test_info_of_the_config_with_resume_is_one_line(info: str) -> None:
    out = run_cli("train", "--info", info, "resume=latest")
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stdout == "", out.stdout[:500]  # no config printed that the run would not use
    assert_one_line_error(out, f"--info {info} with resume=latest", ".hydra/config.yaml")


def test_info_of_the_plugins_with_resume_still_prints() -> None:
    out = run_cli("train", "--info", "plugins", "resume=latest")
    assert out.returncode == 0 and "BasicLauncher" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("flag", ["-p", "--package"])
def test_package_without_cfg_is_refused_before_any_work(flag: str) -> None:
    out = run_cli("train", flag, "model", "trainer.max_steps=1")
    assert_one_line_error(out, "-p/--package model picks the part", "add --cfg job")
    assert "Tokeniz" not in out.stderr and "Run folder" not in out.stderr, out.stderr[-2000:]


def test_package_with_cfg_prints_that_part() -> None:
    out = run_cli("train", "--cfg", "job", "-p", "model")
    assert out.returncode == 0 and "_target_: lmtrain.models" in out.stdout, out.stderr[-2000:]
    assert "trainer:" not in out.stdout, out.stdout[:1000]
