"""Whose export a `callbacks.wandb_model.export_dir` holds (`WandbModelArtifact`).

An export_dir outside the run folder may be shared (set by hand, or fixed in a sweep config): a
second run's export replaced the first run's without a word. An export is this run's when it is
inside this run's folder (the default `<run folder>/export`, also after the folder was moved or
copied, when its lmtrain.json still names the old folder), or was made from a checkpoint in one
of this run's checkpoint folders (an export_dir elsewhere, exported again by a resume).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.utils.export_dir import EXPORT_META, is_previous_export


def foreign_export(folder: Path, own_dirs: list[Path], run_dir: Path) -> str | None:
    """What another run's export in `folder` was made from ("of <checkpoint>"), for the
    refusal; None when `folder` holds no export, or this run's own."""
    if folder.is_relative_to(run_dir) or not is_previous_export(folder):
        return None
    made_from = exported_checkpoint(folder)
    if made_from is not None and any(made_from.is_relative_to(d) for d in own_dirs):
        return None
    return f"of {made_from}" if made_from else f"its {EXPORT_META} names no ckpt_path"


def own_checkpoint_dirs(trainer: L.Trainer) -> list[Path]:
    """Where this run's checkpoints are: the run folder's checkpoints/ (what ckpt_path=last
    resumes from) and each checkpoint callback's dirpath (outside the run folder too); an export
    made from a checkpoint in one of them is this run's."""
    dirs = [last_checkpoint_path(trainer).parent]
    for callback in trainer.checkpoint_callbacks:
        dirpath = getattr(callback, "dirpath", None)
        if dirpath and "://" not in str(dirpath):  # a remote one holds nothing exported here
            dirs.append(Path(dirpath))
    return [d.expanduser().resolve() for d in dirs]


def exported_checkpoint(folder: Path) -> Path | None:
    """The checkpoint the export in `folder` was made from (its lmtrain.json's ckpt_path),
    resolved; None when lmtrain.json does not say (damaged, or written by hand)."""
    try:
        meta = json.loads((folder / EXPORT_META).read_text())
    except (OSError, ValueError):
        return None
    ckpt = meta.get("ckpt_path") if isinstance(meta, dict) else None
    return Path(ckpt).expanduser().resolve() if isinstance(ckpt, str) and ckpt else None
