"""A root folder whose path holds `${` as text is refused in one line, before any folder is made
(lmtrain.utils.run_dir_checks.refuse_interpolation_text).

`PROJECT_ROOT='/data/r${x}'`: Hydra stored the run folder in its config, read the `${x}` in it
again as an interpolation, and its log setup ended in an InterpolationKeyError traceback, after
it had made `.../r${x}/logs/<task>/runs/<time>/` (red team r_path31).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli


@pytest.mark.parametrize("module", ["train", "eval", "generate", "export"])
def test_a_project_root_holding_an_interpolation_is_refused_before_any_folder(
    module: str, tmp_path: Path, data_dir: Path
) -> None:
    root = tmp_path / "r${x}"
    overrides = [f"ckpt_path={tmp_path / 'model.ckpt'}"]
    if module == "train":
        overrides = [o for o in tiny_cli(tmp_path, data_dir, "logger=csv") if "log_dir" not in o]
    result = run_cli(module, *overrides, env={"PROJECT_ROOT": str(root)}, timeout=300)
    assert_one_line_error(
        result, "paths.root_dir (from PROJECT_ROOT)=", "holds '${'", "pass a folder whose path"
    )
    assert not root.exists()
