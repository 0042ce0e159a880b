"""A misspelt key under `model` (`+model.compilee=true`, `+model.peft.rr=3`,
`+model.freeze.embedings=true`) was refused only when the model was built, after the token cache
(the top-level one as the module's TypeError, with no close match), and a misspelt `paths` key
given with `+`/`++` (`++paths.logdir=/x`) was kept without a word while the runs went to the
default folders (red team cfg31, findings 1 and 3). Both are now named, with the key they meant,
before any data work; a key of one's own under `paths`, far from its folders, still runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.cli import run_cli, tiny_cli

# (override, the one error line it gives)
TYPOS = [
    (
        "+model.compilee=true",
        "model.compilee is not an argument of CausalLMModule: did you mean compile?",
    ),
    (
        "+model.gradient_checkpointng=true",  # no close match: how to drop it
        "model.gradient_checkpointng is not an argument of CausalLMModule: drop it with "
        "~model.gradient_checkpointng",
    ),
    ("+model.peft.rr=3", "model.peft.rr is not a LoRA setting: did you mean model.peft.r?"),
    (
        "+model.freeze.embedings=true",
        "model.freeze.embedings is not a freeze setting: did you mean model.freeze.embeddings?",
    ),
    (
        "++paths.logdir={elsewhere}",
        "paths.logdir is not one of the paths folders, so nothing would read it (and "
        "paths.log_dir keeps its default): did you mean paths.log_dir?",
    ),
    (
        "+paths.data_dirr={elsewhere}",
        "paths.data_dirr is not one of the paths folders, so nothing would read it (and "
        "paths.data_dir keeps its default): did you mean paths.data_dir?",
    ),
]


@pytest.mark.parametrize(("override", "error"), TYPOS)
def test_a_misspelt_model_or_paths_key_is_named_before_any_data_work(
    tmp_path: Path, override: str, error: str
) -> None:
    data_dir, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    run = tmp_path / "run"
    given = override.format(elsewhere=elsewhere)
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, f"hydra.run.dir={run}", given))
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [text for text in out.stderr.splitlines() if text.startswith("error: ")]
    assert errors == [f"error: {error}"], errors
    assert "Tokenized" not in out.stderr + out.stdout
    assert not data_dir.exists()  # no token cache was built for a run that cannot start
    assert not run.exists() and not elsewhere.exists()


def test_right_model_keys_and_an_own_paths_key_still_run(tmp_path: Path) -> None:
    """`++` on a key the model takes, and a `paths` key of one's own (far from its folders) that
    the run folder is interpolated from: neither is taken for a typo."""
    data_dir, scratch = tmp_path / "data", tmp_path / "scratch"
    overrides = [
        "logger=csv",
        "++model.nan_guard=skip",
        "model.freeze.first_n_blocks=1",
        f"+paths.scratch={scratch}",
        "hydra.run.dir=${paths.scratch}/run",
    ]
    out = run_cli("train", *tiny_cli(tmp_path, data_dir, *overrides))
    assert out.returncode == 0, out.stderr[-3000:]
    assert not [text for text in out.stderr.splitlines() if text.startswith("error: ")]
    assert (scratch / "run" / "checkpoints" / "last.ckpt").is_file()
    assert any(data_dir.rglob("*")), "the token cache is under paths.data_dir"


def test_a_paths_key_of_ones_own_config_is_kept_however_close(tmp_path: Path) -> None:
    """A key a user's own paths config defines (`data_dir2`, one letter from `data_dir`) is
    theirs, read through `${paths.data_dir2}`: only a key added on the command line with `+` or
    `++` is taken for a typo (review of #31)."""
    conf, second = tmp_path / "conf", tmp_path / "second"
    (conf / "paths").mkdir(parents=True)
    (conf / "paths" / "mine.yaml").write_text(
        f"defaults:\n  - default\n  - _self_\n\ndata_dir2: {second}\n"
    )
    overrides = ["paths=mine", "logger=csv", "hydra.run.dir=${paths.data_dir2}/run"]
    cli = tiny_cli(tmp_path, tmp_path / "data", *overrides)
    out = run_cli("train", "--config-dir", str(conf), *cli)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (second / "run" / "checkpoints" / "last.ckpt").is_file()
