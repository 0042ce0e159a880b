"""A run folder may come from anyone (a shared file system, a copied run): what lmtrain reads
back from it never reaches outside it.

- The checkpoint callback's state in last.ckpt names the files that Lightning removes when it
  replaces them (the kth best checkpoint, the previous last.ckpt): a crafted state naming
  `<dirpath>/../../../victim/...` made the resumed run delete those files. Such paths are
  dropped with a warning (callbacks/checkpoint.py), and Lightning's removal test resolves `..`
  (lightning_compat.ContainedCheckpoint, tested in tests/test_lightning_compat.py).
- The W&B and MLflow run ids kept in the run folder are refused in one line when they are not
  run ids.
- `task_name`, the run folder's name under paths.log_dir, cannot lead out of it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lmtrain.callbacks.checkpoint import StepScheduledCheckpoint
from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import Problems, check_task_name
from lmtrain.utils.logger_runs import MLFLOW_RUN_ID_FILE, mlflow_kwargs
from lmtrain.utils.tensor_digest import add_digest
from lmtrain.utils.wandb_run import RUN_ID_FILE, run_id
from tests.helpers.assertions import assert_one_line_error
from tests.helpers.cli import run_cli, tiny_cli
from tests.helpers.corpora import one_file_corpus

BEST = "best-step={step}-val_loss={val/loss:.4f}"  # configs/callbacks/default.yaml's filename


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, Path]:
    """(run folder, corpus) of a finished tiny run (4 steps, validations after 2 and 4)."""
    root = tmp_path_factory.mktemp("hostile_run")
    corpus = one_file_corpus(root / "corpus")
    run = root / "run"
    out = run_cli(
        "train", *tiny_cli(root, data_dir, "logger=none", f"hydra.run.dir={run}", corpus=corpus)
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return run, corpus


def shared_copy(trained: tuple[Path, Path], tmp_path: Path) -> Path:
    """A copy of the trained run at tmp_path/shared/run, as a colleague's copy would be."""
    run = tmp_path / "shared" / "run"
    shutil.copytree(trained[0], run, symlinks=True)
    return run


def victims(tmp_path: Path) -> dict[Path, str]:
    """Files of the user outside the run folder, with their text."""
    folder = tmp_path / "victim"
    folder.mkdir()
    files = {folder / "precious_best.txt": "best\n", folder / "precious_last.txt": "last\n"}
    for path, text in files.items():
        path.write_text(text)
    return files


def craft_last_ckpt(last: Path, best: str, previous_last: str) -> None:
    """last.ckpt, loaded weights-only, its checkpoint callback's state naming `best` as the one
    (and kth) best checkpoint with a score any validation beats, and `previous_last` as the
    last.ckpt written before; the tensor digest written again, as the red team did."""
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("ModelCheckpoint")]
    score = torch.tensor(100.0)
    checkpoint["callbacks"][key].update(
        dirpath=str(last.parent),
        best_k_models={best: score},
        kth_best_model_path=best,
        best_model_path=best,
        kth_value=score,
        best_model_score=score,
        last_model_path=previous_last,
    )
    add_digest(checkpoint)
    torch.save(checkpoint, last)


def test_a_crafted_last_ckpt_deletes_no_file_outside_the_run_when_resumed(
    trained: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    run = shared_copy(trained, tmp_path)
    files = victims(tmp_path)
    dirpath = run / "checkpoints"
    escape = f"{dirpath}/../../../victim"
    best, last = f"{escape}/precious_best.txt", f"{escape}/precious_last.txt"
    craft_last_ckpt(dirpath / "last.ckpt", best, last)

    out = resume_in_place(run, tmp_path, data_dir, trained[1], "logger=none", "trainer.max_steps=8")
    output = out.stdout + out.stderr
    assert out.returncode == 0, output[-3000:]
    for path, text in files.items():
        assert path.read_text() == text, f"{path} was removed by the resumed run"
    assert "names files that are not its checkpoints" in output
    assert repr(best) in output and repr(last) in output
    # The run went on: it ranked its own validations and wrote its own last.ckpt.
    assert list(dirpath.glob("best-step=8-*.ckpt")) or list(dirpath.glob("best-step=6-*.ckpt"))
    final = torch.load(dirpath / "last.ckpt", map_location="cpu", weights_only=True)
    assert final["global_step"] == 8


def callback(dirpath: Path) -> StepScheduledCheckpoint:
    """The checkpoint callback as configs/callbacks/default.yaml configures it."""
    return StepScheduledCheckpoint(
        dirpath=str(dirpath),
        filename=BEST,
        auto_insert_metric_name=False,
        monitor="val/loss",
        mode="min",
        save_top_k=2,
        save_last=True,
        enable_version_counter=False,
    )


def test_paths_that_are_not_the_callbacks_files_are_dropped_from_its_state(
    tmp_path: Path,
) -> None:
    """Outside dirpath (`..`, absolute, through a link), another name, not a path: dropped; the
    best and kth best are chosen again among the checkpoints that remain."""
    dirpath = tmp_path / "run" / "checkpoints"
    dirpath.mkdir(parents=True)
    outside = tmp_path / "victim.ckpt"
    outside.write_text("precious\n")
    link = dirpath / "best-step=3-val_loss=0.5000.ckpt"
    link.symlink_to(outside)
    own = [str(dirpath / "best-step=2-val_loss=2.0000.ckpt"), str(dirpath / "last.ckpt")]
    Path(own[0]).write_bytes(b"")
    foreign = [
        f"{dirpath}/../../victim.ckpt",
        str(outside),
        str(link),
        str(dirpath / "notes.txt"),
        f"{dirpath}/best-step=1-val_loss=1.0000.ckpt/../../../victim.ckpt",
    ]
    scores = dict.fromkeys(foreign, torch.tensor(0.1)) | {own[0]: torch.tensor(2.0)}
    checkpoint = callback(dirpath)
    with pytest.warns(UserWarning, match="names files that are not its checkpoints") as warned:
        checkpoint.load_state_dict(
            {
                "dirpath": str(dirpath),
                "best_k_models": scores,
                "kth_best_model_path": foreign[0],
                "kth_value": torch.tensor(0.1),
                "best_model_path": foreign[1],
                "best_model_score": torch.tensor(0.1),
                "current_score": torch.tensor(0.1),
                "last_model_path": 7,
                "monitor": "val/loss",
            }
        )
    message = str(warned[0].message)
    assert all(repr(path) in message for path in foreign) and "7" in message
    assert checkpoint.best_k_models == {own[0]: torch.tensor(2.0)}
    assert checkpoint.kth_best_model_path == checkpoint.best_model_path == own[0]
    assert checkpoint.kth_value == checkpoint.best_model_score == torch.tensor(2.0)
    assert checkpoint.last_model_path == ""


def test_a_genuine_state_is_restored_as_it_is(tmp_path: Path, recwarn) -> None:
    dirpath = tmp_path / "checkpoints"
    best = [str(dirpath / "best-step=2-val_loss=2.0000.ckpt"), str(dirpath / "last-v1.ckpt")]
    dirpath.mkdir()
    for path in best:
        Path(path).write_bytes(b"")
    state = {
        "dirpath": str(dirpath),
        "best_k_models": {best[0]: torch.tensor(2.0), best[1]: torch.tensor(3.0)},
        "kth_best_model_path": best[1],
        "kth_value": torch.tensor(3.0),
        "best_model_path": best[0],
        "best_model_score": torch.tensor(2.0),
        "current_score": torch.tensor(3.0),
        "last_model_path": str(dirpath / "last.ckpt"),
        "monitor": "val/loss",
    }
    checkpoint = callback(dirpath)
    checkpoint.load_state_dict(state)
    assert not [w for w in recwarn if "checkpoints" in str(w.message)]
    assert checkpoint.best_k_models == state["best_k_models"]
    assert checkpoint.kth_best_model_path == best[1] and checkpoint.best_model_path == best[0]
    assert checkpoint.last_model_path == state["last_model_path"]


def test_a_state_whose_values_are_not_paths_is_dropped_not_a_traceback(tmp_path: Path) -> None:
    """A crafted state: a list where a path goes, a list where Lightning keeps a dict of scores.
    It was a TypeError (a list is unhashable) or a ValueError (dict() of a list)."""
    dirpath = tmp_path / "checkpoints"
    dirpath.mkdir()
    checkpoint = callback(dirpath)
    with pytest.warns(UserWarning, match="names files that are not its checkpoints"):
        checkpoint.load_state_dict(
            {
                "dirpath": str(dirpath),
                "best_k_models": [str(dirpath / "best-step=1-val_loss=1.0000.ckpt")],
                "best_model_path": ["x"],
                "kth_best_model_path": "",
                "last_model_path": "",
                "monitor": "val/loss",
            }
        )
    assert checkpoint.best_k_models == {} and checkpoint.best_model_path == ""


def test_a_best_checkpoint_deleted_by_hand_is_forgotten_as_missing(tmp_path: Path) -> None:
    """The run's own best checkpoint, no longer on disk: named as missing (not as foreign),
    forgotten, and the best chosen among those that remain (as `ckpt_path=best` and the W&B
    artifact would otherwise read a file that is gone)."""
    dirpath = tmp_path / "checkpoints"
    dirpath.mkdir()
    gone, kept = (str(dirpath / f"best-step={s}-val_loss={s}.0000.ckpt") for s in (1, 2))
    Path(kept).write_bytes(b"")
    checkpoint = callback(dirpath)
    with pytest.warns(UserWarning, match="missing from") as warned:
        checkpoint.load_state_dict(
            {
                "dirpath": str(dirpath),
                "best_k_models": {gone: torch.tensor(1.0), kept: torch.tensor(2.0)},
                "kth_best_model_path": kept,
                "kth_value": torch.tensor(2.0),
                "best_model_path": gone,
                "best_model_score": torch.tensor(1.0),
                "current_score": torch.tensor(2.0),
                "last_model_path": str(dirpath / "last.ckpt"),
                "monitor": "val/loss",
            }
        )
    assert repr(gone) in str(warned[0].message) and repr(kept) not in str(warned[0].message)
    assert checkpoint.best_k_models == {kept: torch.tensor(2.0)}
    assert checkpoint.best_model_path == checkpoint.kth_best_model_path == kept


@pytest.mark.parametrize("saved", ["../../x", "a b", "", ".hidden", "x" * 129, "id\nother"])
def test_a_saved_wandb_run_id_that_is_not_one_is_refused_naming_the_file(
    tmp_path: Path, saved: str
) -> None:
    (tmp_path / RUN_ID_FILE).write_text(saved + "\n")
    with pytest.raises(LMTrainError) as refused:
        run_id(tmp_path, None, resuming=True)
    message = str(refused.value)
    assert f"{tmp_path / RUN_ID_FILE} holds " in message and "not a W&B run id" in message
    assert "\n" not in message


@pytest.mark.parametrize("saved", ["abc123_x-y.z", "exp+1", "lr=3e-4", "экс"])
def test_a_saved_wandb_run_id_is_used_when_it_is_one(tmp_path: Path, saved: str) -> None:
    """What W&B takes as an id (logger.wandb.id=exp+1) resumes: W&B refuses only :;,#?/'."""
    (tmp_path / RUN_ID_FILE).write_text(saved + "\n")
    assert run_id(tmp_path, None, resuming=True) == saved


def test_a_saved_mlflow_run_id_that_is_not_one_is_refused_naming_the_file(
    tmp_path: Path,
) -> None:
    (tmp_path / MLFLOW_RUN_ID_FILE).write_text("../../runs/other\n")
    entry = OmegaConf.create({"_target_": "lmtrain.utils.logger_runs.MLFlowLogger"})
    run_cfg = OmegaConf.create({"task_name": "train", "paths": {"output_dir": str(tmp_path)}})
    with pytest.raises(LMTrainError) as refused:
        mlflow_kwargs(entry, run_cfg, resuming=True)
    assert f"{tmp_path / MLFLOW_RUN_ID_FILE} holds '../../runs/other', which is not" in str(
        refused.value
    )
    (tmp_path / MLFLOW_RUN_ID_FILE).write_text("0123456789abcdef0123456789abcdef\n")
    assert mlflow_kwargs(entry, run_cfg, resuming=True)["run_id"] == "0123456789abcdef" * 2


def test_a_resume_with_a_crafted_wandb_run_id_is_one_line(
    trained: tuple[Path, Path], tmp_path: Path, data_dir: Path
) -> None:
    """W&B itself refused `../../x` with a traceback (wandb.errors.UsageError)."""
    run = shared_copy(trained, tmp_path)
    (run / RUN_ID_FILE).write_text("../../x\n")
    out = resume_in_place(
        run, tmp_path, data_dir, trained[1], "logger=wandb", "trainer.max_steps=6"
    )
    assert_one_line_error(out, f"{run / RUN_ID_FILE} holds '../../x', which is not a W&B run id")


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "x\0y"])
def test_a_task_name_that_is_not_one_folder_name_is_refused(name: object) -> None:
    problems = Problems()
    check_task_name(name, problems)
    assert problems.found == [
        f"task_name={name!r} is not a folder name: pass a name without '/' or '\\'"
    ]


@pytest.mark.parametrize("name", ["..", "", " ", None, [1]])
def test_an_empty_or_dots_only_task_name_is_refused_with_a_name_to_pass(name: object) -> None:
    """The advice about '/' did not help an empty name, which has none."""
    problems = Problems()
    check_task_name(name, problems)
    assert problems.found == [
        f"task_name={name!r} is not a folder name: pass a plain name of letters or digits, "
        "such as train"
    ]


@pytest.mark.parametrize("name", [2024, 1.5])
def test_a_task_name_hydra_read_as_a_number_is_refused_with_quotes_to_add(name: object) -> None:
    """`task_name=2024` was told to pass "letters or digits", which it had: Hydra made it an int."""
    problems = Problems()
    check_task_name(name, problems)
    assert problems.found == [
        f"task_name={name} is a number, not text: quote it, \"task_name='{name}'\""
    ]


@pytest.mark.parametrize("name", ["train", "my-run_2", "eval.v2", "lr1e-3..5e-3"])
def test_a_task_name_of_one_folder_is_taken(name: str) -> None:
    problems = Problems()
    check_task_name(name, problems)
    assert problems.found == []


@pytest.mark.parametrize("tool", ["train", "eval", "generate", "export"])
def test_every_entry_point_refuses_a_task_name_leading_out_of_the_log_dir(
    trained: tuple[Path, Path], tmp_path: Path, data_dir: Path, tool: str
) -> None:
    ckpt = trained[0] / "checkpoints" / "last.ckpt"
    overrides = {
        "train": tiny_cli(tmp_path, data_dir, "logger=none", corpus=trained[1]),
        "eval": [f"ckpt_path={ckpt}", f"paths.log_dir={tmp_path / 'logs'}"],
        "generate": [f"ckpt_path={ckpt}", "prompt=the", f"paths.log_dir={tmp_path / 'logs'}"],
        "export": [
            f"ckpt_path={ckpt}",
            f"out_dir={tmp_path / 'export'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
    }[tool]
    out = run_cli(tool, *overrides, "task_name=../escaped")
    assert_one_line_error(out, "task_name='../escaped' is not a folder name")
    assert not (tmp_path / "export").exists()
    assert not (tmp_path / "escaped").exists()  # refused before Hydra made <log_dir>/../escaped


def resume_in_place(run: Path, tmp_path: Path, data_dir: Path, corpus: Path, *overrides: str):
    """`ckpt_path=last hydra.run.dir=<run>`: the run resumed from its folder's last.ckpt."""
    cli = tiny_cli(
        tmp_path, data_dir, "ckpt_path=last", f"hydra.run.dir={run}", *overrides, corpus=corpus
    )
    return run_cli("train", *cli)


def test_a_resume_whose_hydra_yaml_choices_were_edited_into_a_list_goes_on(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The saved choices only skip an override that names the run's own group choice: a
    `choices` edited into a list was a ValueError traceback; now none are known."""
    run = shared_copy(trained, tmp_path)
    hydra_yaml = OmegaConf.load(run / ".hydra" / "hydra.yaml")
    hydra_yaml.hydra.runtime.choices = ["a", "b"]
    OmegaConf.save(hydra_yaml, run / ".hydra" / "hydra.yaml")
    out = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 6


def test_a_cut_short_last_ckpt_is_refused_with_advice_that_resume_then_follows(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    """The advice named the damaged last.ckpt itself, or a best checkpoint that resume= refuses
    beside it: moving last.ckpt aside is what lets resume= go on."""
    run = shared_copy(trained, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    out = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    line = assert_one_line_error(out, "a zip-format torch file cut short", "copy it again, or")
    assert f"move it aside (mv {last} {last}.damaged): resume= and ckpt_path=last" in line
    last.rename(f"{last}.damaged")
    out = run_cli("train", f"resume={run}", "trainer.max_steps=6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
