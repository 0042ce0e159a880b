"""What a resumed ModelCheckpoint state may name: its checkpoint files in this run's `dirpath`.

A checkpoint is untrusted data, and its run folder may have been moved, copied or pruned by hand
since it was written. These functions decide, from the state alone where they can, which of the
paths it names are this callback's files (moved along with a moved folder), which are foreign
(dropped), and which best checkpoints are gone (forgotten), and rank the rest as Lightning does.
"""

from __future__ import annotations

import ast
import posixpath
import re
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning.pytorch.callbacks import ModelCheckpoint

from lmtrain.utils.contained_paths import lies_in
from lmtrain.utils.sharded_layout import is_sharded_checkpoint

# The state's entries that name checkpoint files (besides the keys of `best_k_models`).
PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def ranked_paths(state: dict[str, Any]) -> list[Any]:
    """The checkpoints `state` ranks: the best, the kth best and the top k, once each. A list,
    not a set: a crafted state's values need not be hashable."""
    ranked = [state.get("best_model_path"), state.get("kth_best_model_path")]
    ranked += list(state.get("best_k_models") or {})
    return [path for i, path in enumerate(ranked) if path and path not in ranked[:i]]


def moved_to(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """`state` (ModelCheckpoint's) with its paths in `dirpath`, when its own dirpath is another
    folder that held every checkpoint it names; otherwise `state` as it is (foreign_paths then
    drops its paths).

    The names decide, not which files the new folder holds: a copied run whose user deleted
    one of its best checkpoints keeps the others (`missing_paths` forgets the deleted one), and
    every rank moves the same state whatever its file system shows."""
    old, best_k = state.get("dirpath"), state.get("best_k_models") or {}
    if dirpath is None or not isinstance(old, str) or old == dirpath:
        return state
    named = [state.get(k) for k in PATH_KEYS] + list(best_k)
    if not isinstance(best_k, dict) or not all(isinstance(p, str) for p in named if p):
        return state  # not a ModelCheckpoint's (foreign_paths drops them)
    paths = [Path(path) for path in named if path]
    if not paths or any(p.parent != Path(old) for p in paths):
        return state

    def moved(path: str) -> str:
        return str(Path(dirpath) / Path(path).name) if path else path

    return {
        **state,
        "dirpath": dirpath,
        **{k: moved(state[k]) for k in PATH_KEYS if k in state},
        "best_k_models": {moved(k): v for k, v in best_k.items()},
    }


def missing_paths(state: dict[str, Any]) -> list[str]:
    """The local checkpoints `state` ranks (best and top k) that are no longer on disk: deleted
    by hand, or never copied with the run. Kept, the best of them stayed `best_model_path`
    (what `ckpt_path=best` and the W&B artifact read) though nothing holds it. A checkpoint is
    a file, or under trainer=fsdp a sharded folder."""
    missing = []
    for path in sorted(ranked_paths(state), key=str):
        local = isinstance(path, str) and get_protocol(path) == "file"
        on_disk = Path(path.removeprefix("file://")) if local else None
        if on_disk is not None and not (on_disk.is_file() or is_sharded_checkpoint(on_disk)):
            missing.append(path)
    return missing


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
        if not isinstance(path, str) or dirpath is None or not lies_in(path, str(dirpath)):
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
    ranked = state.get("best_k_models") or {}
    if isinstance(ranked, dict) and not any(path in dropped for path in ranked_paths(state)):
        return state
    best_k = dict(ranked) if isinstance(ranked, dict) else {}  # a crafted list ranks nothing
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
    return ranking(state_key) == (monitor, mode)


def ranking(state_key: str) -> tuple[Any, Any] | None:
    """The (monitor, mode) a ModelCheckpoint state key (as Lightning builds it) ranks by; None
    for another callback's key."""
    name, brace, settings = state_key.partition("{")
    if name != "ModelCheckpoint" or not brace:
        return None
    try:
        keys = ast.literal_eval(brace + settings)
    except (ValueError, SyntaxError):
        return None
    return (keys.get("monitor"), keys.get("mode")) if isinstance(keys, dict) else None


def beyond_top_k(state: dict[str, Any], top_k: int, mode: str) -> list[str]:
    """The best checkpoints `state` ranks beyond the `top_k` best (worst first), when a resumed
    run keeps fewer than its run did (`save_top_k=3`, then 1 on resume). Lightning restores
    every ranked one and deletes the kth best only while exactly `top_k` are ranked, so with
    more it kept every later best too. Empty when `top_k` keeps them all (-1, or at least as
    many), and for 0: no best checkpoint is saved then, and the run's ones stay.

    Call it on a state whose foreign paths are already dropped (`foreign_paths`): what it
    returns are files this callback wrote, which the caller removes once the resume has
    started, and forgets (`without_paths`). A NaN score ranks last, as Lightning ranks it (so
    does a score that is no number)."""
    best_k = state.get("best_k_models") or {}
    if not isinstance(best_k, dict) or top_k <= 0 or len(best_k) <= top_k:
        return []

    def score(path: str) -> float:
        try:
            value = float(best_k[path])
        except (TypeError, ValueError, RuntimeError):  # a crafted state's score
            value = float("nan")
        if value != value:  # NaN
            return float("inf") if mode == "min" else float("-inf")
        return value

    ranked = sorted(best_k, key=score, reverse=mode != "min")  # best first
    last = state.get("last_model_path")
    return [path for path in reversed(ranked[top_k:]) if path != last]
