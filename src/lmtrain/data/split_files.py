"""Refuse a `data=hf_dataset` val split that reads files the train split also reads.

`check_splits` compares split names and slices; it cannot see that
`data_files={train: 'dir/*.jsonl', validation: 'dir/val-*.jsonl'}` resolves the train glob to the
val files too, so validation measured text the model trained on, without a word (red team:
train [part-000, part-001, val-000], validation [val-000]). The builder has resolved every split's
files before any row is read, so the check costs nothing and comes before any tokenizing.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from lmtrain.data.file_walk import same_file_key
from lmtrain.data.hf_local import split_names
from lmtrain.errors import LMTrainError

# Shared files named in the message; the rest are counted.
SHOWN = 2


def refuse_shared_files(
    data_files: Mapping[Any, Sequence[str]] | None,
    split: str,
    val_split: str | None,
    given: bool,
) -> None:
    """Raise when a file of `val_split` is also a file of `split`, in the builder's resolved
    `data_files` (split name -> files); `given`: whether data.source.data_files chose them, else
    datasets' file-name rules did (`train_val-0.jsonl` holds both keywords and joins both splits).

    Only splits of different names are compared: `train[:90%]` and `train[90%:]` read the same
    files by design, and `check_splits` has judged their slices already.
    """
    if not val_split or not data_files:
        return
    files = {str(name): list(found) for name, found in data_files.items()}
    train_names, val_names = split_names(split), split_names(val_split)
    pairs = [(t, v) for t in train_names for v in val_names if t != v]
    for train_name, val_name in pairs:
        val_keys = {_file_key(f) for f in files.get(val_name, [])}
        train_files = files.get(train_name, [])
        shared = [f for f in train_files if _file_key(f) in val_keys]
        if not shared:
            continue
        train_only = [f for f in train_files if _file_key(f) not in val_keys]
        more = f" and {len(shared) - SHOWN} more" if len(shared) > SHOWN else ""
        count = f"{len(shared)} file{'s' if len(shared) > 1 else ''}"
        if given:
            cause = f"split {train_name!r} of data.source.data_files matches the {val_name!r} files"
            fix = (
                f"give split {train_name!r} a pattern that leaves the {val_name!r} files out"
                f"{_example(train_only, files.get(val_name, []))}, or list its files"
            )
        else:
            cause = f"datasets' file-name rules put them in splits {train_name!r} and {val_name!r}"
            fix = (
                "rename them so that each names one split, or pass data.source.data_files="
                f"{{{train_name}: ..., {val_name}: ...}} with patterns that do not meet"
            )
        raise LMTrainError(
            f"data.source.split={split!r} and data.source.val_split={val_split!r} both read "
            f"{count}, {', '.join(map(repr, shared[:SHOWN]))}{more} ({cause}): validation would "
            f"measure the training data; {fix}"
        )


def _file_key(file: str) -> tuple[int, int] | str:
    """A local file by what its names share (a hard or symbolic link, or `a/../a`, reaches the
    same text: `same_file_key`), else as named (a hub URL)."""
    return same_file_key(file) if os.path.isfile(file) else file


def _example(train_only: Sequence[str], val_files: Iterable[str]) -> str:
    """`, e.g. 'dir/part-*.jsonl'`: the one train-only file, or a glob of the train-only files'
    common name prefix (its trailing digits dropped, so part-000 and part-001 give `part-*`) and
    suffix, if it matches none of the val files; else nothing."""
    paths = [PurePosixPath(f) for f in train_only]
    if not paths or len({p.parent for p in paths}) != 1:
        return ""
    if len(paths) == 1:
        return f" (e.g. {str(paths[0])!r})"
    names = [p.name for p in paths]
    prefix = re.sub(r"\d+$", "", _common_start(names))
    suffix = _common_start([n[::-1] for n in names])[::-1]
    suffix = suffix[len(suffix) - min(len(suffix), min(map(len, names)) - len(prefix)) :]
    suffix = suffix.lstrip("0123456789")  # part-10, part-20: not part-*0
    glob = str(paths[0].parent / f"{prefix}*{suffix}")
    if not prefix or any(fnmatch.fnmatchcase(f, glob) for f in val_files):
        return ""
    return f" (e.g. {glob!r})"


def _common_start(texts: Sequence[str]) -> str:
    """The characters all `texts` start with (names, not paths: `part-0` of `part-01`)."""
    first, last = min(texts), max(texts)  # the sorted ends differ first where any two do
    same = 0
    while same < min(len(first), len(last)) and first[same] == last[same]:
        same += 1
    return first[:same]
