"""eval, generate and export leave a training run's folder alone, and refuse in one line the
inputs a new user gets wrong: `ckpt_path=last` (a training-only value), an export without its
tokenizer files, an out_dir they cannot write, and `resume=` of a folder another tool wrote.

One real training run (CLI, so its folder holds `.hydra/`, metrics.json and checkpoints as a
user's does) and its export serve every test; the commands run as subprocesses, two at a time.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmtrain.models.checkpoint import TOKENIZER_FILES, load_model
from lmtrain.utils.foreign_run_folder import foreign_run
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.faults import drop_root_file_access
from tests.helpers.runs import eval_tiny, export_tiny


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run folder, its export) of a tiny CLI training run."""
    tmp = tmp_path_factory.mktemp("foreign")
    run = tmp / "train-run"
    result = run_cli(
        "train", *tiny_cli(tmp, tmp / "data", f"hydra.run.dir={run}", "logger=csv"), timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run / "metrics.json").is_file() and (run / ".hydra" / "config.yaml").is_file()
    export = export_tiny(run / "checkpoints" / "last.ckpt", tmp / "export", tmp / "data")
    return run, export


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_all(commands: dict[str, list[str]], **kwargs) -> dict:
    """Run `python -m lmtrain.<module> ...` for each (name: [module, *overrides]), two at a time."""

    def one(name: str):
        module, *overrides = commands[name]
        return run_cli(module, *overrides, timeout=300, **kwargs)

    with ThreadPoolExecutor(max_workers=2) as pool:  # ~10 s of startup each
        return dict(zip(commands, pool.map(one, commands), strict=True))


def test_tools_never_write_into_a_training_run(trained: tuple[Path, Path], tmp_path: Path) -> None:
    run, _ = trained
    before = digests(run)
    ckpt = run / "checkpoints" / "last.ckpt"
    into_run = [f"hydra.run.dir={run}", f"ckpt_path={ckpt}"]
    results = run_all(
        {
            "eval": ["eval", *into_run],
            "generate": ["generate", *into_run, "prompt=ab", "max_new_tokens=4"],
            "export": ["export", *into_run, f"out_dir={tmp_path / 'out'}"],
            # What the old hint sent a user to type: `last` is train's, the others want the file.
            "eval last": ["eval", "ckpt_path=last", f"paths.log_dir={tmp_path / 'logs'}"],
            # The run's own folders: eval wrote .hydra/, its log and metrics.json among them.
            "eval in checkpoints": ["eval", f"hydra.run.dir={ckpt.parent}", f"ckpt_path={ckpt}"],
            "generate in csv": ["generate", f"hydra.run.dir={run / 'csv'}", f"ckpt_path={ckpt}"],
        }
    )
    for name in ("eval", "generate", "export"):
        assert_one_line_error(
            results[name],
            f"hydra.run.dir={run} is another run's folder",
            "checkpoints/ of a training run",
            "ckpt_path=<run folder>/checkpoints/last.ckpt",
        )
    assert_one_line_error(
        results["eval in checkpoints"],
        f"hydra.run.dir={ckpt.parent} is another run's folder",
        f"(it is checkpoints/ of the training run {run})",
    )
    assert_one_line_error(
        results["generate in csv"],
        f"hydra.run.dir={run / 'csv'} is another run's folder",
        f"(it is csv/ of the training run {run})",
    )
    assert_one_line_error(
        results["eval last"],
        "ckpt_path=last only resumes training",
        "ckpt_path=<run folder>/checkpoints/last.ckpt",
    )
    assert digests(run) == before
    assert not (tmp_path / "out").exists()


def test_eval_from_python_refuses_a_training_run_and_repeats_into_its_own_folder(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate(cfg)` of a config composed in Python runs no Hydra callback: it replaced the
    training run's metrics.json. A repeated eval into its own folder (no `.hydra/` from Python,
    its metrics.json names the checkpoint it scored) still runs."""
    run, _ = trained
    ckpt, before = run / "checkpoints" / "last.ckpt", digests(run)
    with pytest.raises(SystemExit):
        eval_tiny(ckpt, run, tmp_path / "data")
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(
        f"error: hydra.run.dir={run} is another run's folder (it holds checkpoints/ of a "
        "training run), which task_name=eval would overwrite"
    )
    assert digests(run) == before
    own = tmp_path / "eval-run"
    first = eval_tiny(ckpt, own, tmp_path / "data")
    assert eval_tiny(ckpt, own, tmp_path / "data") == first
    # A task name of one's own: its metrics.json is still eval's (it names no task).
    named = tmp_path / "named-eval"
    for _ in range(2):
        assert eval_tiny(ckpt, named, tmp_path / "data", "task_name=myeval") == first


def test_a_folder_of_the_same_task_is_not_foreign(tmp_path: Path) -> None:
    """A repeated eval into its own folder (and DDP ranks > 0 in rank 0's) may write there; a
    folder with the metrics.json of another task, or of no known task, may not."""
    folder = tmp_path / "eval-run"
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("task_name: eval\n")
    (folder / "metrics.json").write_text("{}\n")
    assert foreign_run(folder, "eval") is None
    assert foreign_run(tmp_path / "new", "eval") is None
    assert "task_name=eval" in foreign_run(folder, "generate")
    (folder / ".hydra" / "config.yaml").unlink()
    assert "metrics.json" in foreign_run(folder, "eval")
    # Another task's .hydra/ alone (a command refused early) holds nothing to lose.
    (folder / "metrics.json").unlink()
    (folder / ".hydra" / "config.yaml").write_text("task_name: train\n")
    assert foreign_run(folder, "eval") is None
    # An export: a generate run's .hydra/ in it made a later `export overwrite=true` refuse it.
    export = tmp_path / "export"
    export.mkdir()
    (export / "lmtrain.json").write_text("{}\n")
    (export / "config.json").write_text("{}\n")
    assert foreign_run(export, "generate") == "it is an lmtrain export"


def test_a_new_or_empty_folder_inside_a_run_is_not_foreign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's `mkdir <run>/eval`, and the folder DDP rank 0 made without `.hydra/`
    (hydra.output_subdir=null) when ranks > 0 start in it, are the task's own; the run's own
    folders are not, once they hold something."""
    run = tmp_path / "run"
    for name in ("checkpoints", ".hydra", "csv", "wandb"):
        (run / name).mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text("step\n")
    (run / "eval").mkdir()
    assert foreign_run(run / "eval", "eval") is None  # pre-made and empty
    (run / "eval" / "eval.log").write_text("rank 0 started\n")
    assert foreign_run(run / "eval", "eval") is None  # rank 0's folder, met by rank 1
    assert foreign_run(run / "new", "eval") is None
    assert foreign_run(run / "wandb", "eval") is None  # the run's own folder, but empty
    assert foreign_run(run / "csv", "eval") == f"it is csv/ of the training run {run}"
    # A folder holding the user's own checkpoint (`hydra.run.dir=.` beside model.ckpt).
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.ckpt").write_bytes(b"")
    assert foreign_run(tmp_path / "mine", "generate") is None
    # The run's checkpoints/ by another name: `.` in it, `x/..`, a link; a run's
    # model_checkpoint.dirpath elsewhere holds its last.ckpt.
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    (run / "checkpoints" / "x").mkdir()
    (tmp_path / "link").symlink_to(run / "checkpoints")
    monkeypatch.chdir(run / "checkpoints")
    for name in (Path("."), run / "checkpoints" / "x" / "..", tmp_path / "link"):
        assert foreign_run(name, "eval") == f"it is checkpoints/ of the training run {run}"
    (tmp_path / "mine" / "last.ckpt").write_bytes(b"")
    assert (
        foreign_run(tmp_path / "mine", "eval") == "it holds last.ckpt, a training run's checkpoint"
    )


def test_export_without_tokenizer_files_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, export = trained
    assert len(load_model(export).tokenizer) > 2  # a complete export passes the check
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(export, broken)
    for name in TOKENIZER_FILES:
        (broken / name).unlink()
    place = f"paths.log_dir={tmp_path / 'logs'}"
    results = run_all(
        {
            "generate": ["generate", f"ckpt_path={broken}", "prompt=ab", place],
            "eval": ["eval", f"ckpt_path={broken}", place],
        }
    )
    for result in results.values():
        assert_one_line_error(
            result, f"ckpt_path={str(broken)!r} has no usable tokenizer", "lmtrain.export"
        )
        assert result.stdout.strip() == ""  # generate used to print the prompt and exit 0


def test_export_without_tokenizer_config_is_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """tokenizer.json without tokenizer_config.json: transformers took the class from
    config.json (GPT2Tokenizer for a char tokenizer: spaces and newlines dropped), and eval
    gave another loss with exit 0. Refused in one line by eval, generate and a run that reads
    the folder as its pretrained tokenizer, which leaves no token cache behind."""
    _, export = trained
    broken = tmp_path / "no-tokenizer-config"
    shutil.copytree(export, broken)
    (broken / "tokenizer_config.json").unlink()
    place = f"paths.log_dir={tmp_path / 'logs'}"
    results = run_all(
        {
            "generate": ["generate", f"ckpt_path={broken}", "prompt=a b", place],
            "eval": ["eval", f"ckpt_path={broken}", place],
            "train": [
                "train",
                *tiny_cli(tmp_path, tmp_path / "data"),
                "data.tokenizer.kind=pretrained",
                f"data.tokenizer.name={broken}",
            ],
        }
    )
    for name, result in results.items():
        key = "data.tokenizer.name" if name == "train" else "ckpt_path"
        assert_one_line_error(result, f"{key}={str(broken)!r} has tokenizer files but no ")
        assert result.stdout.strip() == ""
    assert not any((tmp_path / "data").glob("cache/*/meta.json"))


@pytest.mark.skipif(os.geteuid() != 0 and os.access("/", os.W_OK), reason="needs file modes")
@pytest.mark.parametrize("made", [False, True], ids=["new", "empty-of-ones-own"])
def test_export_into_unwritable_parent(
    trained: tuple[Path, Path], tmp_path: Path, made: bool
) -> None:
    """Root writes anywhere through CAP_DAC_OVERRIDE: the export runs without it (still uid 0).
    An empty folder of one's own in a folder one cannot write (a shared group folder) failed
    only after the model was loaded and checked, asking for "a writable out_dir" (rev_exrep)."""
    run, _ = trained
    parent = tmp_path / "read-only"
    out = parent / "model"
    (out if made else parent).mkdir(parents=True)
    parent.chmod(0o555)
    try:
        result = run_cli(
            "export",
            f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
            f"out_dir={out}",
            f"paths.log_dir={tmp_path / 'logs'}",
            preexec_fn=drop_root_file_access if os.geteuid() == 0 else None,
            timeout=300,
        )
    finally:
        parent.chmod(0o755)
    inside = f"pass a new folder inside it, e.g. out_dir={str(out / 'model')!r}"
    advice = inside if made else "pass a folder under one you can write"
    line = assert_one_line_error(result, f"out_dir={str(out)!r}: {str(parent)!r} is not writable")
    assert line.endswith(f"an export is written beside out_dir, then renamed into place: {advice}")
    assert "Loading" not in result.stderr  # refused before the model is read
    assert [p.name for p in parent.rglob("*")] == (["model"] if made else [])  # nothing written


def test_export_onto_a_full_disk_is_one_line_and_takes_back_its_folders(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """A disk that fills while the weights are written: safetensors' writer raised its own
    SafetensorError (a traceback), and the parent folders the export had made stayed behind,
    empty (rev_exrep). RLIMIT_FSIZE makes the kernel refuse the write as a full disk would."""
    run, _ = trained
    out = tmp_path / "new" / "nested" / "model"
    result = run_cli(
        "export",
        f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}",
        f"out_dir={out}",
        f"paths.log_dir={tmp_path / 'logs'}",
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (32_000, 32_000)),
        timeout=300,
    )
    assert_one_line_error(
        result,
        f"out_dir={out} cannot be created or written (File too large): free space on that disk, "
        "or pass an out_dir on another one",
    )
    assert not (tmp_path / "new").exists()


def test_resume_of_another_tools_run_folder(trained: tuple[Path, Path], tmp_path: Path) -> None:
    """A training run whose .hydra/ an eval overwrote (as lmtrain.eval did before it refused
    such folders): resume= names the tool the config belongs to, not a setting deep inside."""
    run, _ = trained
    damaged = tmp_path / "damaged-run"
    shutil.copytree(run, damaged)
    record = damaged / ".hydra"
    config = OmegaConf.load(record / "config.yaml")
    config.task_name = "eval"
    OmegaConf.save(config, record / "config.yaml")
    hydra_yaml = OmegaConf.load(record / "hydra.yaml")
    hydra_yaml.hydra.job.config_name = "eval"
    OmegaConf.save(hydra_yaml, record / "hydra.yaml")
    before = digests(damaged)
    result = run_cli("train", f"resume={damaged}", timeout=300)
    assert_one_line_error(
        result,
        f"resume={damaged}",
        "is one of lmtrain.eval (task_name=eval), not of lmtrain.train",
        "ckpt_path=last hydra.run.dir=<run folder>",
    )
    assert digests(damaged) == before
