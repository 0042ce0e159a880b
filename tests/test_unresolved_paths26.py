"""Red team clean26: a `${...}` that does not resolve, in a path or in any override.

An unset `${oc.env:X}` in a setting the run folder is built from (`paths.root_dir`,
`paths.log_dir`, `hydra.run.dir`, or configs/local/default.yaml's `paths.root_dir`: a cluster's
`$SCRATCH`, unset on a laptop) ended train, eval and generate in Hydra's callback warning and a
50 to 70 line traceback. Any other unresolvable override (`model.optimizer.lr=${oc.env:X}`) got
the right `error:` line, but after the warning, and left the refused run's folder behind: the
`local=` check resolved every override while reading them. Each is now one line naming the
setting and the variable to set, before any folder is made (lmtrain.utils.unresolved_folder).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus
from tests.helpers.runs import train_tiny

# A variable no environment sets.
UNSET = "LMTRAIN_UNSET_VAR_26"
RESOLVE_ERROR = f"Environment variable '{UNSET}' not found"


def assert_only_the_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """One `error:` line holding `fragments`, and nothing else: no callback warning before it."""
    assert_one_line_error(result, RESOLVE_ERROR, *fragments)
    assert "UserWarning" not in result.stderr, result.stderr[-3000:]  # Hydra's, for a callback


def tiny_without_log_dir(tmp_path: Path, data_dir: Path, *overrides: str) -> list[str]:
    """A tiny run's overrides whose run folder comes from `paths.root_dir` (no paths.log_dir),
    then `overrides`."""
    tiny = tiny_cli(tmp_path, data_dir, "logger=csv")
    return [*(o for o in tiny if not o.startswith("paths.log_dir=")), *overrides]


@pytest.mark.parametrize(
    ("override", "said"),
    [
        (f"paths.root_dir=${{oc.env:{UNSET}}}/x", f"paths.root_dir='${{oc.env:{UNSET}}}/x'"),
        (f"paths.log_dir=${{oc.env:{UNSET}}}", f"paths.log_dir='${{oc.env:{UNSET}}}'"),
        (f"task_name=${{oc.env:{UNSET}}}", f"task_name='${{oc.env:{UNSET}}}'"),
        # Read by resume='s check of a typed run folder too (it warned before the line).
        (f"hydra.run.dir=${{oc.env:{UNSET}}}/r", f"hydra.run.dir='${{oc.env:{UNSET}}}/r'"),
    ],
)
def test_train_refuses_an_unset_variable_in_the_run_folder_in_one_line(
    tmp_path: Path, data_dir: Path, override: str, said: str
) -> None:
    result = run_cli("train", *tiny_without_log_dir(tmp_path, data_dir, override))
    assert_only_the_line(result, f"{said} cannot be resolved", f"set {UNSET}, or pass a plain")
    assert result.returncode == 1


def test_an_unset_variable_in_the_machine_config_is_refused_in_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    """configs/local/default.yaml's place, here a `--config-dir` folder's local/default.yaml."""
    machine = tmp_path / "machine"
    (machine / "local").mkdir(parents=True)
    (machine / "local" / "default.yaml").write_text(
        f"# @package _global_\npaths:\n  root_dir: ${{oc.env:{UNSET}}}/lm\n"
    )
    overrides = tiny_without_log_dir(tmp_path, data_dir)
    result = run_cli("train", "--config-dir", str(machine), *overrides)
    assert_only_the_line(result, f"paths.root_dir='${{oc.env:{UNSET}}}/lm'", f"set {UNSET}")


def test_an_unresolvable_override_leaves_no_run_folder_and_no_warning(
    tmp_path: Path, data_dir: Path
) -> None:
    override = f"model.optimizer.lr=${{oc.env:{UNSET}}}"
    result = run_cli("train", *tiny_cli(tmp_path, data_dir, "logger=csv", override))
    assert_only_the_line(result, "model.optimizer.lr cannot be resolved")
    # paths.log_dir=<tmp>/logs did not exist: no logs/train/runs/<time>/ and nothing above it.
    assert not (tmp_path / "logs").exists(), sorted(map(str, (tmp_path / "logs").rglob("*")))


def test_eval_and_generate_refuse_an_unset_variable_in_the_run_folder_in_one_line(
    tmp_path: Path, data_dir: Path
) -> None:
    corpus = one_file_corpus(tmp_path / "corpus")
    ckpt = train_tiny(
        tmp_path / "train", data_dir, corpus, "data.tokenizer.kind=char", "trainer.max_steps=2"
    )
    before = sorted(tmp_path.rglob("*"))
    for entry in ("eval", "generate"):
        for key in ("paths.log_dir", "hydra.run.dir"):
            value = f"${{oc.env:{UNSET}}}/{entry}"
            result = run_cli(entry, f"ckpt_path={ckpt}", f"{key}={value}")
            assert_only_the_line(result, f"{key}='{value}' cannot be resolved", f"set {UNSET}")
    assert sorted(tmp_path.rglob("*")) == before  # nothing made, the checkpoint's run untouched


def test_a_run_folder_and_override_that_resolve_still_run(tmp_path: Path, data_dir: Path) -> None:
    """`${...}` that resolve, in the run folder and in an override, are not refused (2 steps)."""
    run = tmp_path / "run"
    overrides = [
        "hydra.run.dir=${oc.env:LMTRAIN_RUNS_26}/run",
        "model.optimizer.lr=${oc.decode:'0.001'}",
    ]
    cli = tiny_cli(tmp_path, data_dir, "logger=csv", "trainer.max_steps=2", *overrides)
    result = run_cli("train", *cli, env={"LMTRAIN_RUNS_26": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
