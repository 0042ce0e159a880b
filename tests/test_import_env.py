"""A rank variable that is not a whole number is refused in one line before the libraries load.

Importing Lightning and torchmetrics runs `int()` on RANK / LOCAL_RANK / SLURM_PROCID: with
`LOCAL_RANK=abc` every entry point died in a library's import with a ValueError traceback
(lmtrain.utils.import_env).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmtrain.utils.import_env import unreadable_rank
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli

# `python -m lmtrain.strategies`: its package's __init__ checks them (tests/test_leftouts19.py).
ENTRY_POINTS = ["train", "eval", "generate", "export", "report"]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_every_entry_point_refuses_a_local_rank_that_is_no_number(
    module: str, tmp_path: Path
) -> None:
    result = run_cli(
        module, f"paths.root_dir={tmp_path}", env={"LOCAL_RANK": "abc"}, fresh=True, timeout=120
    )
    assert_one_line_error(result, "LOCAL_RANK='abc' is not a whole number", "unset it")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value"), [("RANK", "x1"), ("SLURM_PROCID", ""), ("JSM_NAMESPACE_RANK", "0.5")]
)
def test_the_other_rank_variables_the_imports_read(name: str, value: str, tmp_path: Path) -> None:
    result = run_cli("train", f"paths.root_dir={tmp_path}", env={name: value}, fresh=True)
    assert_one_line_error(result, f"{name}={value!r} is not a whole number")
    assert list(tmp_path.iterdir()) == []


def test_whole_numbers_and_unset_variables_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert unreadable_rank() is None
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("SLURM_PROCID", " 3 ")  # int() reads it, as the libraries do
    assert unreadable_rank() is None
    monkeypatch.setenv("RANK", "one")
    assert unreadable_rank() == (
        "RANK='one' is not a whole number, and the libraries read it as one while they load: "
        "unset it (torchrun sets it in each process it starts)"
    )
