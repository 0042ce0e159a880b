"""`StepScheduledCheckpoint`: Lightning's ModelCheckpoint, with the best checkpoint chosen after
each validation only, and `every_n_train_steps` a schedule for last.ckpt alone.

Given `every_n_train_steps`, Lightning 2.6 ranks top-k at the step saves, by whatever `val/loss`
holds then: at a step that a validation follows, the previous validation's value. The best
checkpoint then got newer weights under an older loss, and the validation at that step was never
ranked (Lightning skips the save after it, the step being saved already). The step save also
comes before that validation, so a run killed during it resumed past it (Lightning fast-forwards
a validation due at the batch a checkpoint was written after): its val row, text samples and
EarlyStopping and best-checkpoint decisions were lost.

So this subclass gives Lightning no step schedule: as without one, Lightning ranks top-k right
after each validation, on that validation's metric and the weights it saw. `every_n_train_steps`
writes last.ckpt, through the public `trainer.save_checkpoint`, every N optimizer steps from the
start (Lightning would wait for the first val/loss), except at a step that a validation follows:
last.ckpt is written after that validation instead, so a kill during it resumes from the save
before and validates again. After every validation, and at the end of training, last.ckpt
holds the latest state (Lightning 2.6 writes it there only when top-k saved, or, at the end,
when it saved nothing before). A run resumed with another `every_n_train_steps` keeps its
top-k state.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from lmtrain.lightning_compat import ContainedCheckpoint, inside, validation_follows

# The state's entries that name checkpoint files (besides the keys of `best_k_models`).
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


class StepScheduledCheckpoint(ContainedCheckpoint):
    """ModelCheckpoint whose top-k is decided after validations only, and whose
    `every_n_train_steps` writes last.ckpt (never top-k), before the first validation too."""

    def __init__(self, *args: Any, every_n_train_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # no step schedule: top-k after each validation
        # The key this callback's state had when Lightning ran the step schedule: the one
        # ModelCheckpoint with these settings has, so checkpoints written by an earlier version
        # of this class, or by Lightning's own, restore into this one. Building it also checks
        # every_n_train_steps (>= 0, not with every_n_epochs) as Lightning does.
        triggers = {k: kwargs[k] for k in ("every_n_epochs", "train_time_interval") if k in kwargs}
        self._state_key = ModelCheckpoint(
            monitor=self.monitor,
            mode=self.mode,
            every_n_train_steps=every_n_train_steps,
            **triggers,
        ).state_key
        self.last_every_n_steps = every_n_train_steps or 0
        self._last_written_step: int | None = None  # the step last.ckpt holds (here or Lightning's)
        self._saves = 0  # checkpoints (of any name) saved with their callback state, counted

    @property
    def state_key(self) -> str:
        return self._state_key

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A resumed run starts on the step its checkpoint holds: no need to write it again.
        self._last_written_step = trainer.global_step

    def on_save_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._saves += 1

    def on_load_checkpoint(
        self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Before Lightning loads callback states by key: a run resumed with another
        `every_n_train_steps` (part of the key) finds its state under the old key. Without it,
        the best checkpoints so far were forgotten, a worse one was kept beside them and became
        `best_model_path` (and the W&B `best` artifact)."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        same = [k for k in states if same_ranking(k, self.monitor, self.mode)]
        if len(same) == 1:  # two checkpoint callbacks ranking alike: leave it to Lightning
            states[self.state_key] = states[same[0]]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run folder moved (or copied) before its resume keeps its best checkpoints so far.
        Lightning restores them only from the same `dirpath`, and otherwise kept the old path
        as `best_model_path` and ranked the next validation alone: a worse checkpoint became
        the best, beside the real one.

        A checkpoint is untrusted data: paths of its state that are not files this callback
        writes in `dirpath` (`<dirpath>/../../x`, a file elsewhere, another name) are dropped
        with a warning. Lightning removes the kth best and the previous last.ckpt when it
        replaces them, so a crafted last.ckpt made the resumed run delete files anywhere, and
        the W&B artifact callback would upload `best_model_path` whatever it names."""
        state = moved_to(state_dict, self.dirpath)
        dropped = foreign_paths(state, self.dirpath, name_pattern(self))
        if dropped:
            rank_zero_warn(
                f"The {type(self).__name__} state of the checkpoint resumed from names files "
                f"that are not its checkpoints in {self.dirpath}: "
                f"{', '.join(repr(p) for p in dropped)}; they are forgotten (never removed or "
                "uploaded), and the best checkpoint is chosen among the others"
            )
            state = without_paths(state, dropped, self.mode)
        super().load_state_dict(state)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._last_due(trainer):
            # The same decision on every rank, as save_checkpoint (a collective under DDP and
            # FSDP) needs: a step count, and the loop's own counters for the validation.
            self._write_last(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        saves = self._saves
        super().on_validation_end(trainer, pl_module)  # top-k, and last.ckpt if top-k saved
        fitting = trainer.state.fn == TrainerFn.FITTING
        if not self.save_last or not fitting or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if self._saves == saves:  # Lightning saved nothing (or weights only): last.ckpt here
            self._write_last(trainer)
        self._last_written_step = trainer.global_step

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.fast_dev_run:  # Lightning 2.6 would still write last.ckpt here
            return
        saves = self._saves
        super().on_train_end(trainer, pl_module)  # last.ckpt, only if Lightning saved none yet
        # Otherwise Lightning's latest last.ckpt may be steps before the end: write the end.
        final = self._saves == saves and trainer.global_step != self._last_written_step
        if final and self.save_last and not trainer.fast_dev_run:
            self._write_last(trainer)

    def _last_due(self, trainer: Trainer) -> bool:
        """A scheduled step not written yet, that no validation follows (the save after that
        validation writes last.ckpt)."""
        every = self.last_every_n_steps
        return bool(
            self.save_last
            and every >= 1
            and trainer.global_step % every == 0
            and trainer.global_step != self._last_written_step
            and not (trainer.fast_dev_run or trainer.sanity_checking)
            and not validation_follows(trainer)
        )

    def _write_last(self, trainer: Trainer) -> None:
        # The path as Lightning spells it: its next save of last.ckpt removes the previous one
        # when the two names differ.
        path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        self.last_model_path = path  # part of the state saved, as in Lightning's own saves
        trainer.save_checkpoint(path, self.save_weights_only)
        self._last_written_step = trainer.global_step


def moved_to(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """`state` (ModelCheckpoint's) with its paths in `dirpath`, when its own dirpath is another
    folder and `dirpath` holds every checkpoint it names, by name; otherwise `state` as it is
    (Lightning then warns that it drops it)."""
    old = state.get("dirpath")
    if dirpath is None or old is None or old == dirpath:
        return state
    named = [state.get(k) for k in ("best_model_path", "kth_best_model_path", "last_model_path")]
    named += list(state.get("best_k_models") or {})
    if not all(isinstance(path, str) for path in named if path):
        return state  # not a ModelCheckpoint's (foreign_paths drops them)
    paths = [Path(path) for path in named if path]
    if not paths or any(
        p.parent != Path(old) or not (Path(dirpath) / p.name).is_file() for p in paths
    ):
        return state

    def moved(path: str) -> str:
        return str(Path(dirpath) / Path(path).name) if path else path

    return {
        **state,
        "dirpath": dirpath,
        **{
            k: moved(state[k])
            for k in ("best_model_path", "kth_best_model_path", "last_model_path")
            if k in state
        },
        "best_k_models": {moved(k): v for k, v in (state.get("best_k_models") or {}).items()},
    }


def name_pattern(callback: ModelCheckpoint) -> re.Pattern[str]:
    """The paths, relative to its dirpath, that `callback` writes: its `filename` template (or
    Lightning's default) or last's, each field any text without `/` (after `name=` when
    Lightning inserts metric names), then a version suffix (`-v1`) and the extension."""

    def template(text: str) -> str:
        parts, start = [], 0
        for field in re.finditer(r"\{([^:}]*)[^}]*\}", text):  # Lightning's fields
            parts.append(re.escape(text[start : field.start()]))
            if callback.auto_insert_metric_name:
                parts.append(re.escape(field[1] + callback.CHECKPOINT_EQUALS_CHAR))
            parts.append("[^/]*")
            start = field.end()
        return "".join([*parts, re.escape(text[start:])])

    join = re.escape(callback.CHECKPOINT_JOIN_CHAR)
    default = "{epoch}" + callback.CHECKPOINT_JOIN_CHAR + "{step}"
    names = [callback.filename or default, callback.CHECKPOINT_NAME_LAST or ""]
    alternatives = "|".join(template(name) for name in names if name)
    extension = re.escape(callback.FILE_EXTENSION)
    return re.compile(rf"(?:{alternatives})(?:{join}v\d+)?{extension}")


def foreign_paths(state: dict[str, Any], dirpath: str | None, names: re.Pattern[str]) -> list:
    """The paths (or other values) `state` names that are not files in `dirpath` named as
    `names` matches, once links and `..` are resolved."""

    def own(path: Any) -> bool:
        if not isinstance(path, str) or dirpath is None or not inside(path, str(dirpath)):
            return False
        if get_protocol(path) == "file":
            resolved = Path(path.removeprefix("file://")).resolve()
            folder = Path(str(dirpath).removeprefix("file://")).resolve()
            relative = resolved.relative_to(folder).as_posix()
        else:
            relative = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(dirpath))
        return names.fullmatch(relative) is not None

    named = [state.get(key) for key in PATH_KEYS] + list(state.get("best_k_models") or {})
    dropped: list = []
    for path in named:
        if path and not own(path) and path not in dropped:
            dropped.append(path)
    return dropped


def without_paths(state: dict[str, Any], dropped: list, mode: str) -> dict[str, Any]:
    """`state` without the `dropped` paths: a dropped last_model_path is forgotten; when one of
    the best checkpoints is, the best and kth best are chosen again among the others, as
    Lightning chooses them (nothing ranked: as a new callback has them)."""
    state = dict(state)
    if state.get("last_model_path") in dropped:
        state["last_model_path"] = ""
    best_k = dict(state.get("best_k_models") or {})
    ranked = [state.get("best_model_path"), state.get("kth_best_model_path"), *best_k]
    if not any(path in dropped for path in ranked if path):
        return state
    best_k = {path: score for path, score in best_k.items() if path not in dropped}
    state["best_k_models"] = best_k
    if best_k:
        worst, best = (max, min) if mode == "min" else (min, max)
        state["kth_best_model_path"] = worst(best_k, key=best_k.get)
        state["kth_value"] = best_k[state["kth_best_model_path"]]
        state["best_model_path"] = best(best_k, key=best_k.get)
        state["best_model_score"] = best_k[state["best_model_path"]]
    else:
        state["kth_best_model_path"] = state["best_model_path"] = ""
        state["kth_value"] = torch.tensor(float("inf") if mode == "min" else float("-inf"))
        state["best_model_score"] = None
    return state


def same_ranking(state_key: str, monitor: str | None, mode: str) -> bool:
    """Whether `state_key` is a ModelCheckpoint's (`ModelCheckpoint{'monitor': ..., ...}`, as
    Lightning builds it) that ranks by `monitor` in `mode`."""
    name, brace, settings = state_key.partition("{")
    if name != "ModelCheckpoint" or not brace:
        return False
    try:
        keys = ast.literal_eval(brace + settings)
    except (ValueError, SyntaxError):
        return False
    return isinstance(keys, dict) and (keys.get("monitor"), keys.get("mode")) == (monitor, mode)
