"""Yes/no settings take only true or false: Hydra passes `overwrite_run=no` as the string "no",
which `bool()` reads as yes, and that replaced a run's checkpoints (and `model.freeze.embeddings=no`
froze the embeddings). A run, an export and a generate given such a value are refused in one line
before anything is written; and a prompt file that is a folder, binary or unreadable is refused
in one line too."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lmtrain.errors import LMTrainError
from lmtrain.export import export
from lmtrain.generate import generate, read_prompt
from lmtrain.train import train
from lmtrain.utils.checks import Problems, strict_bool
from lmtrain.utils.config_checks import check_train_config
from tests.helpers import ROOT
from tests.helpers.assertions import assert_one_line_error, one_error_line
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.compose import compose
from tests.helpers.faults import drop_root_file_access
from tests.helpers.runs import export_tiny


def not_bool(key: str, value: Any) -> str:
    return f"error: {key}={value!r} is not true or false: pass {key}=true or {key}=false"


def files_of(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` but the run lock, whose content names its holder."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, list[str]]:
    """A real first run from the command line; returns its folder and its overrides."""
    root = tmp_path_factory.mktemp("strict")
    run = root / "run"
    cli = tiny_cli(root, data_dir, "logger=none", "callbacks.text_samples=null")
    result = run_cli("train", *cli, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    return run, cli


def test_overwrite_run_no_on_the_command_line_leaves_the_run_alone(
    first_run: tuple[Path, list[str]], data_dir: Path
) -> None:
    """The Hydra callback that claims the folder runs before `train()`: it checks too."""
    run, cli = first_run
    before = files_of(run)
    result = run_cli("train", *cli, f"hydra.run.dir={run}", "overwrite_run=no")
    assert result.returncode == 1
    assert assert_one_line_error(result) == not_bool("overwrite_run", "no")
    assert files_of(run) == before  # checkpoints and .hydra/ byte for byte


def test_overwrite_run_maybe_in_process_leaves_the_run_alone(
    first_run: tuple[Path, list[str]], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train()` without Hydra's command line (notebooks, tests): `check_train_config`."""
    run, cli = first_run
    before = files_of(run)
    cfg = compose("train", run, data_dir, *cli, "overwrite_run=maybe")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train(cfg)
    assert exit_.value.code == 1
    assert one_error_line(capsys.readouterr().err) == not_bool("overwrite_run", "maybe")
    assert files_of(run) == before


def test_freeze_embeddings_no_on_the_command_line_is_refused_before_any_work(
    tmp_path: Path, data_dir: Path
) -> None:
    """It froze the embeddings (28.4 K trainable parameters became 25.5 K) without a word."""
    cache = tmp_path / "cache"
    cli = tiny_cli(tmp_path, data_dir, "logger=none", f"data.cache_dir={cache}")
    result = run_cli("train", *cli, "model.freeze.embeddings=no")
    assert result.returncode == 1
    assert assert_one_line_error(result) == not_bool("model.freeze.embeddings", "no")
    assert not cache.exists(), "nothing is prepared before the check"


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("model.freeze.embeddings=no", "model.freeze.embeddings", "no"),
        ("model.freeze.embeddings=0", "model.freeze.embeddings", 0),
        ("model.compile=no", "model.compile", "no"),  # compiled the model
        ("data.pin_memory=no", "data.pin_memory", "no"),  # pinned memory
        ("data.pin_memory=null", "data.pin_memory", None),
    ],
)
def test_training_flags_that_are_not_true_or_false_are_refused(
    compose_cfg, override: str, key: str, value: Any
) -> None:
    with pytest.raises(LMTrainError) as refused:
        check_train_config(compose_cfg(override))
    assert f"error: {refused.value}" == not_bool(key, value)


def test_streaming_no_is_refused(compose_cfg) -> None:
    cfg = compose_cfg("data=hf_dataset", "data.source.path=x", "data.source.streaming=no")
    with pytest.raises(LMTrainError) as refused:
        check_train_config(cfg)
    assert f"error: {refused.value}" == not_bool("data.source.streaming", "no")


def test_training_flags_given_true_or_false_pass(compose_cfg) -> None:
    flags = ["model.freeze.embeddings", "model.compile", "data.pin_memory"]
    check_train_config(compose_cfg(*(f"{flag}=true" for flag in flags)))
    check_train_config(compose_cfg(*(f"{flag}=FALSE" for flag in flags)))


@pytest.mark.parametrize("override", ["overwrite=maybe", "verify=no"])
def test_export_flags_that_are_not_true_or_false_leave_the_export_alone(
    first_run: tuple[Path, list[str]],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
) -> None:
    ckpt = first_run[0] / "checkpoints" / "last.ckpt"
    out = export_tiny(ckpt, tmp_path / "export", data_dir)
    before = files_of(out)
    cfg = compose(
        "export", tmp_path / "again", data_dir, f"ckpt_path={ckpt}", f"out_dir={out}", override
    )
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        export(cfg)
    assert exit_.value.code == 1
    key, value = override.split("=")
    assert one_error_line(capsys.readouterr().err) == not_bool(key, value)
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "export", "export-export-run"]


@pytest.mark.parametrize("override", ["greedy=no", "stop_at_eos=maybe", "greedy=1"])
def test_generate_flags_that_are_not_true_or_false_are_refused(
    first_run: tuple[Path, list[str]],
    data_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    override: str,
) -> None:
    ckpt = first_run[0] / "checkpoints" / "last.ckpt"
    cfg = compose("generate", tmp_path / "run", data_dir, f"ckpt_path={ckpt}", override)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        generate(cfg)
    assert exit_.value.code == 1
    captured = capsys.readouterr()
    key = override.split("=")[0]
    assert one_error_line(captured.err) == not_bool(key, cfg[key])
    assert captured.out == ""  # no text generated


def test_hydra_gives_bools_for_true_and_false_only(tmp_path: Path, data_dir: Path) -> None:
    """Why only bools pass: `x=TRUE`/`x=false` arrive as bools; `yes`, `no`, `1` and a quoted
    "true" do not (so they are refused rather than guessed)."""
    given = {"TRUE": True, "false": False, "yes": "yes", "no": "no", "1": 1, '"true"': "true"}
    for text, value in given.items():
        cfg = compose("export", tmp_path / "run", data_dir, f"overwrite={text}")
        assert cfg.overwrite == value and type(cfg.overwrite) is type(value)


@pytest.mark.parametrize("value", [True, False])
def test_strict_bool_passes_bools(value: bool) -> None:
    assert strict_bool("overwrite_run", value) is value
    problems = Problems()
    assert problems.boolean("overwrite_run", value)
    assert problems.found == []


@pytest.mark.parametrize("value", ["no", "yes", "maybe", "true", "False", "", 0, 1, 0.0, None])
def test_strict_bool_refuses_everything_else(value: Any) -> None:
    with pytest.raises(LMTrainError) as refused:
        strict_bool("overwrite_run", value)
    assert f"error: {refused.value}" == not_bool("overwrite_run", value)
    problems = Problems()
    assert not problems.boolean("overwrite_run", value)
    assert problems.found == [str(refused.value)]


def test_a_prompt_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LMTrainError) as refused:
        read_prompt(None, str(tmp_path))
    assert str(refused.value) == (
        f"prompt_file={str(tmp_path)!r} is a folder: pass a UTF-8 text file inside it"
    )


def test_a_binary_prompt_file_is_refused(tmp_path: Path) -> None:
    binary = tmp_path / "prompt.bin"
    binary.write_bytes(b"The dog \xff\xfe\x00")
    with pytest.raises(LMTrainError) as refused:
        read_prompt(None, str(binary))
    assert str(refused.value) == (
        f"prompt_file={str(binary)!r} is not UTF-8 text (byte 0xff at offset 8): "
        "save it as UTF-8 or pass prompt=<text>"
    )


def test_an_unreadable_prompt_file_is_refused(tmp_path: Path) -> None:
    """Read in a child that checks file modes even as root (drop_root_file_access)."""
    locked = tmp_path / "prompt.txt"
    locked.write_text("The dog")
    locked.chmod(0)
    code = (
        "import sys\n"
        "from lmtrain.errors import LMTrainError\n"
        "from lmtrain.generate import read_prompt\n"
        "try:\n"
        f"    read_prompt(None, {str(locked)!r})\n"
        "except LMTrainError as err:\n"
        "    print(err)\n"
        "    sys.exit(1)\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=drop_root_file_access if os.geteuid() == 0 else None,
    )
    assert child.returncode == 1, child.stderr[-2000:]
    assert child.stdout.strip() == (
        f"prompt_file={str(locked)!r} cannot be read (Permission denied): check its "
        "permissions or pass another text file"
    )
