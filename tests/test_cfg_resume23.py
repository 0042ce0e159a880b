"""`--cfg job resume=<run>` printed the composed defaults (another model, another corpus) with
exit 0, not the saved config the resume runs (red team rev_cfg23): it is refused in one line."""

from __future__ import annotations

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli


@pytest.mark.parametrize("resume", ["resume=latest", "resume=/some/run", "+resume=latest"])
def test_cfg_with_resume_is_one_line(resume: str) -> None:
    out = run_cli("train", "--cfg", "job", resume)
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stdout == "", out.stdout[:500]  # no config printed that the run would not use
    assert_one_line_error(out, f"--cfg job with {resume}", ".hydra/config.yaml")


def test_cfg_with_resume_null_still_prints() -> None:
    out = run_cli("train", "--cfg", "job", "resume=null", "seed=4")
    assert out.returncode == 0 and "seed: 4" in out.stdout, out.stderr[-2000:]
