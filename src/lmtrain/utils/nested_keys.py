"""Misspelt keys under `model.peft`, `model.freeze` and `paths`, named before any work.

`+model.peft.rr=3` and `+model.freeze.embedings=true` were refused only when the model was built,
after the token cache (hours on a real corpus); `++paths.logdir=/scratch/x` was kept without a
word, and the runs went to the default folders (a home file system filled instead of scratch).
The key lists are the model's own (`lmtrain.utils.model_keys`, which the model imports too).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from lmtrain.utils.checks import Problems
from lmtrain.utils.local_configs import select
from lmtrain.utils.model_keys import FREEZE_KEYS, LORA_DEFAULTS
from lmtrain.utils.unresolved_folder import as_typed

# Each `model.<key>` mapping whose keys the model refuses when it is built: its keys, and what
# they are.
MODEL_KEY_LISTS = {
    "peft": (LORA_DEFAULTS, "a LoRA setting"),
    "freeze": (FREEZE_KEYS, "a freeze setting"),
}
# The `paths` config every entry point composes (`paths: default`): its keys are the folders.
PATHS_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "paths" / "default.yaml"
# How close a `paths` key must be to a known one to be taken for a typo (difflib's ratio):
# `logdir` and `data_dirr` are 0.92 and 0.94 from log_dir and data_dir.
PATHS_CUTOFF = 0.8


def check_model_sub_keys(model: Any, problems: Problems) -> None:
    """Each key under `model.peft` (a mapping: `model/peft=lora`, or none's with a `+` key) and
    `model.freeze` that the model refuses when it is built, with the key it most likely meant."""
    if not isinstance(model, Mapping):
        return
    for key, (keys, what) in MODEL_KEY_LISTS.items():
        given = model.get(key)
        if not isinstance(given, Mapping):  # `model.peft=lora` (text): the model's to check
            continue
        known = sorted(map(str, keys))
        for extra in sorted({str(k) for k in given} - set(known)):
            close = difflib.get_close_matches(extra, known, n=1)
            hint = f"did you mean model.{key}.{close[0]}?" if close else f"use {', '.join(known)}"
            problems.add(f"model.{key}.{extra} is not {what}: {hint}")


def check_paths_keys(paths: Any, problems: Problems, hydra: Any = None) -> None:
    """A `paths` key added on the command line (`++paths.logdir=/x`, `+paths.data_dirr=/x`; the
    Hydra node `hydra`'s overrides) one edit or so from one of configs/paths/default.yaml's
    folders: nothing reads it, and the real folder keeps its default. A key of one's own paths
    config (`data_dir2`, read through `${paths.data_dir2}`) is not checked, however close."""
    if not isinstance(paths, Mapping):
        return
    typed = as_typed(select(hydra, "overrides", "task")) if hydra is not None else []
    added = {o.partition("=")[0].lstrip("+") for o in typed if o.startswith("+")}
    known = known_paths_keys()
    for key in sorted({str(k) for k in paths} - set(known)):
        if f"paths.{key}" not in added:
            continue
        # Far from every folder, a key is kept: a command line may add one for `${...}`
        # interpolation (`+paths.scratch=/scratch/me`); only a near miss is taken for a typo.
        close = difflib.get_close_matches(key, known, n=1, cutoff=PATHS_CUTOFF)
        if close:
            problems.add(
                f"paths.{key} is not one of the paths folders, so nothing would read it (and "
                f"paths.{close[0]} keeps its default): did you mean paths.{close[0]}?"
            )


def known_paths_keys() -> list[str]:
    """The keys of configs/paths/default.yaml (root_dir, data_dir, log_dir, output_dir)."""
    with PATHS_CONFIG.open(encoding="utf-8") as file:
        config = yaml.safe_load(file)
    return sorted(map(str, config)) if isinstance(config, Mapping) else []
