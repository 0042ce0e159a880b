"""A debug run (`debug=fdr`, `trainer.fast_dev_run`) never changes a real run's record, and a run
is not split between a typed `paths.output_dir` and Hydra's run folder (red team).

`debug=fdr ckpt_path=last hydra.run.dir=<run>` trained nothing, replaced the run's
`.hydra/config.yaml` with the debug config (and, for a run cut short, its metrics.json with a
one-batch one), and `resume=<run>` then stopped at once. `paths.output_dir=X hydra.run.dir=Y`
put checkpoints and metrics in X and `.hydra/` and the log in Y, so `resume=` took neither.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import open_dict, read_write

from lmtrain.utils.config_checks import check_train_config
from tests.helpers.assertions import assert_one_line_error, refusal, tree_digest
from tests.helpers.cli import run_cli, tiny_cli

LOCK = ".lock"  # the run folder's lock names its last holder


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A finished tiny run (4 steps, validations after steps 2 and 4) and its CLI overrides
    but the run folder. Its paths.output_dir is typed, the same folder as hydra.run.dir."""
    tmp = tmp_path_factory.mktemp("real")
    run, common = tmp / "run", tiny_cli(tmp, tmp / "data", "logger=csv")
    result = run_cli("train", *common, f"hydra.run.dir={run}", f"paths.output_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "metrics.json").is_file()
    return run, common


@pytest.mark.parametrize("debug", ["debug=fdr", "+trainer.fast_dev_run=2"])
def test_a_debug_run_into_a_runs_folder_is_refused_and_changes_nothing(
    real_run: tuple[Path, list[str]], debug: str
) -> None:
    run, common = real_run
    before = tree_digest(run, skip=(LOCK,))
    result = run_cli("train", *common, debug, "ckpt_path=last", f"hydra.run.dir={run}")
    value = "true" if debug == "debug=fdr" else "2"
    assert_one_line_error(
        result,
        f"hydra.run.dir={run} already holds a run (checkpoints/last.ckpt, metrics.json",
        f"(trainer.fast_dev_run={value}) would replace: pass a new hydra.run.dir; "
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'} still loads that run's weights into "
        "the debug run",
    )
    assert tree_digest(run, skip=(LOCK,)) == before  # no debug.log, .hydra/ as it was
    assert not (run / "debug.log").exists() and not (run / ".hydra" / "previous").exists()


def test_a_debug_run_into_a_run_cut_short_before_a_checkpoint_is_refused(
    real_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A run killed before its first save has only its `.hydra/` record (and its log)."""
    run, common = real_run
    short = tmp_path / "short"
    shutil.copytree(run / ".hydra", short / ".hydra")
    before = tree_digest(short)
    result = run_cli("train", *common, "debug=fdr", f"hydra.run.dir={short}")
    line = assert_one_line_error(
        result, f"hydra.run.dir={short} already holds a run (.hydra/)", "pass a new hydra.run.dir"
    )
    assert "ckpt_path=" not in line, line  # no checkpoint to offer
    assert tree_digest(short) == before and not (short / "metrics.json").exists()


def test_a_debug_run_from_a_runs_checkpoint_into_a_new_folder_runs(
    real_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """What the refusal offers: the run's weights, in a folder of the debug run's own."""
    run, common = real_run
    before, new = tree_digest(run, skip=(LOCK,)), tmp_path / "debug"
    ckpt = run / "checkpoints" / "last.ckpt"
    result = run_cli("train", *common, "debug=fdr", f"ckpt_path={ckpt}", f"hydra.run.dir={new}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "val/loss" in json.loads((new / "metrics.json").read_text())
    assert tree_digest(run, skip=(LOCK,)) == before


def test_a_debug_run_from_python_into_a_runs_folder_is_refused(compose_cfg) -> None:
    """`train(cfg)` has no ClaimRunFolder: check_train_config refuses it (metrics.json or a
    checkpoint; its own `.hydra/` is not another run's)."""
    cfg = compose_cfg("debug=fdr")
    run = Path(cfg.paths.output_dir).resolve()
    (run / ".hydra").mkdir()
    check_train_config(cfg)  # a new folder
    (run / "metrics.json").write_text("{}")
    assert refusal(lambda: check_train_config(cfg)) == (
        f"hydra.run.dir={run} already holds a run (metrics.json), whose record a debug run "
        "(trainer.fast_dev_run=true) would replace: pass a new hydra.run.dir"
    )


def test_paths_output_dir_beside_hydra_run_dir_is_refused_before_anything_is_written(
    tmp_path: Path, data_dir: Path
) -> None:
    elsewhere, run = tmp_path / "elsewhere", tmp_path / "run"
    result = run_cli(
        "train",
        *tiny_cli(tmp_path, data_dir, "logger=csv"),
        f"hydra.run.dir={run}",
        f"paths.output_dir={elsewhere}",
    )
    assert_one_line_error(
        result,
        f"paths.output_dir={elsewhere} is not the run folder {run} (Hydra's hydra.run.dir): "
        f"pass hydra.run.dir={elsewhere} instead",
    )
    assert not elsewhere.exists() and not (run / "checkpoints").exists()


def test_paths_output_dir_beside_a_sweep_jobs_folder_is_refused(compose_cfg, tmp_path) -> None:
    elsewhere = tmp_path / "elsewhere"
    cfg = compose_cfg(f"paths.output_dir={elsewhere}")  # typed; compose puts back the job's
    check_train_config(cfg)
    with read_write(cfg.hydra), open_dict(cfg):
        cfg.paths.output_dir = str(elsewhere)
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig().set_config(cfg)
    job = (tmp_path / "run").resolve()
    assert refusal(lambda: check_train_config(cfg)) == (
        f"paths.output_dir={elsewhere} is not this sweep job's folder {job}: drop it"
    )


def test_a_refused_debug_commands_record_does_not_block_the_next_one(
    real_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """A debug command refused after Hydra wrote `.hydra/` (a typo) left a folder that refused
    the corrected command as "a run"; the debug record of another process (a node) alike."""
    _, common = real_run
    folder = tmp_path / "debug"
    folder.mkdir()  # one that existed keeps the refused command's record (a new one goes)
    typo = run_cli(
        "train", *common, "debug=fdr", "optimized_metric=val/los", f"hydra.run.dir={folder}"
    )
    assert_one_line_error(typo, "optimized_metric='val/los' is not a metric lmtrain logs")
    assert (folder / ".hydra" / "config.yaml").is_file()
    fixed = run_cli("train", *common, "debug=fdr", f"hydra.run.dir={folder}")
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def test_overwrite_run_lets_a_debug_run_replace_a_run(
    real_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """overwrite_run=true says to replace the folder's run, as it does for any run (rev_diff14b)."""
    run, common = real_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(LOCK))
    result = run_cli("train", *common, "debug=fdr", "overwrite_run=true", f"hydra.run.dir={copy}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((copy / "metrics.json").read_text())["trainer/global_step"] == 1
