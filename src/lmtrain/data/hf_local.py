"""What `HFDatasetSource` decides about a dataset before `datasets` reads it: which builder a local
path needs, and which settings cannot work together (which files of a local folder or glob it
reads: `lmtrain.data.hf_files`).

A local file or glob gets datasets' packaged builder for its extension; a folder written by
`Dataset.save_to_disk` (which `load_dataset` refuses) is read as its Arrow files.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lmtrain.errors import LMTrainError, MissingCorpusError
from lmtrain.utils.checks import setting_text

log = logging.getLogger(__name__)

# datasets' packaged builder for a local file or glob, by extension (.gz etc. are read through).
BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet"}
BUILDERS |= {".txt": "text", ".text": "text", ".md": "text", ".csv": "csv", ".arrow": "arrow"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
# A split's name, and datasets' split spec: `train`, `train[10:20]`, `train[:10%](closest)`.
SPLIT_NAME = re.compile(r"\w+(\.\w+)*")
SPLIT_SPEC = re.compile(
    r"(\w+(?:\.\w+)*)(?P<slice>\[(-?\d+)?(%)?:(-?\d+)?(%)?\])?(?:\((?P<rounding>[^)]*)\))?"
)


def local_builder(path: str) -> tuple[str, str | list[str] | None]:
    """(builder, data files) for a local file, glob or `save_to_disk` folder; else (path, None),
    for datasets to resolve (a hub id, a folder of data files, a `DatasetDict` folder)."""
    local = Path(path).expanduser()
    suffix = Path(local.name.removesuffix(compression_suffix(local.name))).suffix
    if suffix in BUILDERS and (local.is_file() or glob.has_magic(path)):
        found = local.is_file() or any(map(os.path.isfile, glob.iglob(str(local), recursive=True)))
        if not found:
            # datasets read no file: a traceback, or "holds no rows" as if a file were empty
            raise MissingCorpusError(
                path,
                f"data.source.path={path!r} matches no file: pass an existing file, folder or glob",
            )
        return BUILDERS[suffix], str(local)
    if (local / "state.json").is_file() and (local / "dataset_info.json").is_file():
        # One Dataset saved with save_to_disk: its rows are the Arrow files, in name order.
        return "arrow", sorted(str(f) for f in local.glob("*.arrow"))
    if (local / "dataset_dict.json").is_file():
        return "arrow", saved_splits(local)
    return path, None


def saved_splits(folder: Path) -> dict[str, list[str]]:
    """The Arrow files of each split of a `DatasetDict.save_to_disk` folder: its subfolders.

    Left to datasets, the folder names are read as split keywords: `mytrain` and `myval` both
    fell into train (the held-out split trained on), and `heldout` was dropped."""
    try:
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, TypeError, KeyError, RecursionError) as err:
        splits = err
    if not isinstance(splits, list) or not all(
        isinstance(s, str) and SPLIT_NAME.fullmatch(s) and (folder / s).is_dir() for s in splits
    ):
        raise LMTrainError(
            f"{folder / 'dataset_dict.json'} does not list the split folders beside it "
            '(DatasetDict.save_to_disk writes {"splits": ["train", ...]}): save the dataset '
            "again, or pass data.source.data_files"
        )
    return {s: sorted(str(f) for f in (folder / s).glob("*.arrow")) for s in splits}


# What each setting of HFDatasetSource that names something takes (in its refusal); the first
# three are required, and not empty.
TEXT_SETTINGS = {
    "path": "a hub id, a local folder, or json/jsonl/parquet/text files",
    "text_column": "the name of the column that holds the text",
    "split": "a split name, such as train or 'train[:90%]'",
    "val_split": "a split name, such as validation, or null to hold out val_fraction",
    "name": "the dataset's config (subset) name, or null",
    "data_dir": "a subfolder of the dataset, or null",
    "revision": "a hub branch, tag or commit, or null",
    "cache_dir": "a folder, or null for HF_DATASETS_CACHE",
}
REQUIRED_TEXT = ("path", "text_column", "split")


def source_text(key: str, value: Any) -> str | None:
    """`data.source.<key>` as text (see `setting_text`: `split=5` is the split named 5, and a
    list or a mapping one line); a required one that is empty is refused too."""
    required = key in REQUIRED_TEXT
    text = setting_text(f"data.source.{key}", value, TEXT_SETTINGS[key], required=required)
    if required and not text:
        raise LMTrainError(f"data.source.{key}={text!r} is empty: pass {TEXT_SETTINGS[key]}")
    return text


def check_splits(split: str, val_split: str | None, streaming: bool) -> None:
    """Refuse a val split that is the train split or overlaps it (`train[:10%]` of `train`),
    and slices that streaming cannot read."""
    if val_split is not None and val_split.strip() == split.strip():
        raise LMTrainError(
            f"data.source.val_split={val_split!r} is data.source.split: validation would measure "
            "the training data; pass another split (e.g. validation), or val_split=null to hold "
            "out data.source.val_fraction of the split"
        )
    overlap = None if val_split is None else splits_overlap(split, val_split)
    if overlap:
        raise LMTrainError(
            f"data.source.val_split={val_split!r} overlaps data.source.split={split!r}: "
            "validation would measure the training data; pass slices that do not meet "
            "(split='train[:90%]' val_split='train[90%:]'), another split, or val_split=null"
        )
    if overlap is None and val_split is not None:
        log.warning(
            "data.source.split=%r and val_split=%r slice one split in ways that cannot be "
            "compared (percent and rows, rows from the end, or two roundings): make sure they do "
            "not overlap",
            split,
            val_split,
        )
    sliced = [(k, v) for k, v in (("split", split), ("val_split", val_split)) if v and "[" in v]
    if streaming and sliced:
        key, value = sliced[0]
        raise LMTrainError(
            f"data.source.{key}={value!r} slices a split, which a streamed dataset cannot: pass "
            "data.source.streaming=false, or the whole split"
        )


def check_load_kwargs(load_kwargs: Any) -> dict[str, Any]:
    """`data.source.load_kwargs`, a mapping of `load_dataset` keywords (plain): `abc` was
    `dict('abc')`'s ValueError, a traceback naming no key."""
    if load_kwargs is None:
        return {}
    if not isinstance(load_kwargs, Mapping) or not all(isinstance(k, str) for k in load_kwargs):
        raise LMTrainError(
            f"data.source.load_kwargs={load_kwargs!r} is not a mapping of load_dataset keywords: "
            "pass e.g. 'data.source.load_kwargs={encoding:latin-1}', or {}"
        )
    return dict(load_kwargs)


def splits_overlap(split: str, val_split: str) -> bool | None:
    """Whether the split specs (datasets' `train[:90%]+extra` syntax) share rows: True, False,
    or None when slices of one split cannot be compared without its length. Datasets parses
    the specs only as it reads them, and has no public way to compare two."""
    parts = [slices(spec) for spec in (split, val_split)]
    if parts[0] is None or parts[1] is None:
        return False  # not a spec: datasets refuses it in its own words
    verdict: bool | None = False
    for name, unit, low, high in parts[0]:
        for other, other_unit, other_low, other_high in parts[1]:
            if name != other:
                continue
            if "whole" in (unit, other_unit):
                return True
            if unit != other_unit:
                verdict = None
            elif None in (low, high, other_low, other_high):
                verdict = None  # rows counted from the end
            elif max(low, other_low) < min(high, other_high):
                return True
    return verdict


def slices(spec: str) -> list[tuple[str, str, float | None, float | None]] | None:
    """(split, unit, start, end) of each `+` part of `spec`: unit `% (<rounding>)`, `rows` or
    `whole` (start 0, end infinite), negative bounds made positive for `%` and None for rows."""
    parts = []
    for part in re.split(r"\s*\+\s*", spec.strip()):
        match = SPLIT_SPEC.fullmatch(part)
        if match is None:
            return None
        name, start, start_pct, end, end_pct = match.group(1, 3, 4, 5, 6)
        if match.group("slice") is None:
            parts.append((name, "whole", 0.0, math.inf))
            continue
        # Percent slices round to rows by their rounding: only two of one rounding compare.
        rounding = match.group("rounding") or "closest"
        unit = f"% ({rounding})" if start_pct or end_pct else "rows"
        full = 100.0 if unit != "rows" else math.inf
        bounds = []
        for value, default in ((start, 0.0), (end, full)):
            number = default if value is None else float(value)
            if number < 0:
                number = number + 100.0 if unit != "rows" else None
            bounds.append(number)
        parts.append((name, unit, bounds[0], bounds[1]))
    return parts


def split_names(spec: str) -> list[str]:
    """The splits a split spec reads: `train` and `validation` of `train+validation[:50%]`."""
    return [part[0] for part in slices(spec) or [(spec.split("[")[0],)]]


def compression_suffix(name: str) -> str:
    return next((suffix for suffix in COMPRESSIONS if name.endswith(suffix)), "")


def plain(value: Any) -> Any:
    """Hydra's ListConfig / DictConfig as plain lists and dicts, which datasets expects."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [plain(v) for v in value]
    return value
