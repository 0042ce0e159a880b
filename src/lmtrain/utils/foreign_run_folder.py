"""eval, generate and export never write into another task's run folder.

Each of them writes a run folder of its own (`.hydra/`, its log, eval's `metrics.json`). Given
`hydra.run.dir=<a training run>`, Hydra would replace that run's saved config before the task
starts and eval would overwrite its `metrics.json`: the run could no longer be resumed with
`resume=`, and its final metrics would be lost. `RefuseForeignRunFolder` stops such a command,
in one line, before Hydra writes anything; so is an export folder, which a later `export
overwrite=true` would no longer take for one. A folder of the same task (a repeated eval into its
own folder, Lightning's DDP ranks > 0 re-run in rank 0's folder) is left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import refuse_bad_task_name
from lmtrain.utils.export_dir import is_previous_export
from lmtrain.utils.local_configs import refuse_missing_local
from lmtrain.utils.run_dir_checks import refuse_unmade_folder
from lmtrain.utils.unresolved_folder import error_line, refuse_unresolved_folder

# What lmtrain.train leaves in a run folder and none of these tools writes.
TRAINING_OUTPUTS = ("checkpoints",)
RUN_FOLDERS = ("checkpoints", ".hydra")  # what a training run's folder holds
# The folders a training run writes inside its own: another task's files there would mix with it.
RUN_OWN_FOLDERS = ("checkpoints", "csv", "wandb", "tensorboard", "export", ".hydra")
SAVED_CONFIG = Path(".hydra") / "config.yaml"


def foreign_run(folder: Path, task_name: str, entry: str | None = None) -> str | None:
    """What makes `folder` another task's run folder, or None when this task may write there.
    `entry` (`eval`) also takes as its own a metrics.json its entry point wrote from Python."""
    if not folder.is_dir():
        return None
    folder = folder.resolve()  # `.`, `x/..` or a link name no folder: its real path does
    for name in TRAINING_OUTPUTS:
        if (folder / name).exists():
            return f"it holds {name}/ of a training run"
    # Not a run folder itself, but one of a run's own folders (checkpoints/, csv/, wandb/), or
    # where a run saved its last.ckpt (`callbacks.model_checkpoint.dirpath`). Any other folder is
    # fine, empty or new: a user's `mkdir <run>/eval`, a folder of the user's own model.ckpt, or
    # the folder Lightning's DDP rank 0 made without `.hydra/` (hydra.output_subdir=null) before
    # ranks > 0 re-run the command in it.
    if not (folder / ".hydra").exists():
        in_run = all((folder.parent / name).is_dir() for name in RUN_FOLDERS)
        if in_run and folder.name in RUN_OWN_FOLDERS and any(folder.iterdir()):
            return f"it is {folder.name}/ of the training run {folder.parent}"
        if (folder / "last.ckpt").is_file():
            return "it holds last.ckpt, a training run's checkpoint"
    if is_previous_export(folder):  # .hydra/ and a log in it: export would refuse to update it
        return "it is an lmtrain export"
    # Without outputs, another task's `.hydra/` is the record of a command that failed early:
    # nothing of value to lose (and `resume=` needs a checkpoint anyway).
    if not (folder / "metrics.json").exists():
        return None
    saved = saved_task_name(folder / SAVED_CONFIG)
    if saved is None:  # a run composed in Python writes no `.hydra/`: its metrics tell
        saved = metrics_task(folder / "metrics.json")
        if saved is not None and saved == entry:
            return None
    if saved is None:
        return f"it holds a metrics.json without a readable {SAVED_CONFIG}"
    if saved != task_name:
        return f"it holds the metrics.json of a run of task_name={saved}"
    return None


def saved_task_name(path: Path) -> str | None:
    """The task_name in a run's saved config, None when there is none to read."""
    try:
        saved = OmegaConf.load(path)
    except Exception:  # missing, unreadable, not YAML: no task to compare with
        return None
    task = saved.get("task_name") if isinstance(saved, DictConfig) else None
    return None if task is None else str(task)


def metrics_task(path: Path) -> str | None:
    """The task whose metrics.json `path` is, told by its keys, for a run composed in Python
    (no `.hydra/` record): train's reports `trainer/global_step`, eval's the `ckpt_path` scored."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):  # unreadable, not JSON: no task to compare with
        return None
    if not isinstance(metrics, dict):
        return None
    if "trainer/global_step" in metrics:
        return "train"
    return "eval" if "ckpt_path" in metrics else None


def refusal(key: str, folder: Path, task: str, reason: str) -> str:
    new = "pass a new folder"
    if key == "hydra.run.dir":
        new += " (without it, each run gets one)"
    return (
        f"{key}={folder} is another run's folder ({reason}), which task_name={task} would "
        f"overwrite: {new}; to use that run's model pass ckpt_path=<run folder>/checkpoints/"
        "last.ckpt"
    )


def refuse_foreign_output_dir(folder: Path, task: str, key: str) -> None:
    """Raise LMTrainError when `folder` is another run's (`foreign_run`), for eval. A config
    composed in Python (a notebook's `evaluate(cfg)`) runs no Hydra callback, and eval replaced a
    training run's metrics.json."""
    reason = foreign_run(folder, task, entry="eval")
    if reason is not None:
        raise LMTrainError(refusal(key, folder, task, reason))


class RefuseForeignRunFolder(HydraCallback):
    """Hydra callback (configs/eval.yaml, generate.yaml, export.yaml `hydra.callbacks`): refuse a
    `hydra.run.dir` that holds another task's run, before Hydra writes `.hydra/` into it.

    Hydra turns a callback's exception into a warning, so the refusal prints its one `error:`
    line and exits 1 itself.
    """

    def on_run_start(self, config: DictConfig, **_: Any) -> None:
        try:
            refuse_bad_task_name(config)  # before Hydra makes <log_dir>/<task_name>/... and its log
            refuse_missing_local(config)  # before Hydra writes .hydra/ into the run folder
            refuse_unresolved_folder(config, "hydra.run.dir")  # `${oc.env:UNSET}` in a path
            refuse_unmade_folder(config, "hydra.run.dir")  # `~/run`, an empty PROJECT_ROOT
        except (LMTrainError, OmegaConfBaseException) as err:
            print(error_line(err, config, "hydra.run.dir"), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        folder = Path(str(config.hydra.run.dir))  # as Hydra will write it: no `~` expanded
        task = str(config.task_name)
        reason = foreign_run(folder, task)
        if reason is None:
            return
        line = refusal("hydra.run.dir", folder, task, reason)
        print(f"error: {line}", file=sys.stderr, flush=True)
        raise SystemExit(1)

    def on_multirun_start(self, config: DictConfig, **_: Any) -> None:
        """A sweep (`-m`): its folder, before Hydra's launcher makes it."""
        try:
            refuse_bad_task_name(config)  # the sweep folder is named by it
            refuse_unresolved_folder(config, "hydra.sweep.dir")
            refuse_unmade_folder(config, "hydra.sweep.dir")
        except (LMTrainError, OmegaConfBaseException) as err:
            print(error_line(err, config, "hydra.sweep.dir"), file=sys.stderr, flush=True)
            raise SystemExit(1) from None
