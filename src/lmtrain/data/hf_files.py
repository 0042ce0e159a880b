"""Which files of a local folder or glob `HFDatasetSource` hands to `datasets`, and which it must
not: what lmtrain wrote there, and files `datasets` would drop without a word.

A run's logs, configs and checkpoints and a token cache are never corpus text, whether the corpus
is named by a folder or by a glob (`data=text_files` leaves them out of both the same way): a
cache's `train.bin` / `val.bin` would pass for the corpus's splits, its JSON files for records, and
a run's samples.txt would join the next run's corpus. And
datasets reads a folder as one format, that of its most common data files: a folder of one
`.jsonl` and two `.txt` notes trained on the notes alone. Such a folder is refused, naming the
files it would leave out; a glob without a format of its own (`corpus/*`) gets the builder of
the one format it matches, or the same refusal. Plain text left out beside records (a
CHANGELOG.md, a LICENSE.txt) is a note, not data: one info line names it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import os
from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from lmtrain.data.file_walk import glob_root, lmtrain_folder
from lmtrain.data.hf_local import BUILDERS, compression_suffix
from lmtrain.errors import LMTrainError

log = logging.getLogger(__name__)

# The dataset card datasets reads at a folder's top: not data, though `.md` is text elsewhere.
DATASET_CARD = "README.md"
# Files named in a refusal before "and N more".
NAMED = 3
# The builder of plain-text files: beside records, notes rather than data.
TEXT = "text"


class LocalFiles(NamedTuple):
    """What lmtrain passes datasets for a local path: `builder` and `data_files` replace the
    ones `local_builder` found (None: keep them), and `expected` are the data files the user's
    folder holds, each of which the builder must read (empty: nothing to check)."""

    builder: str | None = None
    data_files: Any = None
    expected: tuple[str, ...] = ()


def file_format(name: str) -> str | None:
    """The packaged builder that reads a file by its name (`a.jsonl.gz`: json), or None."""
    base = name.removesuffix(compression_suffix(name))
    return BUILDERS.get(Path(base).suffix.lower())


def local_files(
    path: str,
    data_files: Any,
    data_dir: str | None,
    left_out: Mapping[str, Path],
    setting: str,
) -> LocalFiles:
    """The files to read for data.source.path=`path` (given as `setting`) when the user named no
    data_files; `data_files` is what `local_builder` found for it."""
    local = Path(path).expanduser()
    if data_files is None and local.is_dir():
        folder = local / data_dir if data_dir else local
        kept, found = folder_data_files(folder, left_out, setting)
        if card_names_files(folder):
            found = []  # the card says which of them are data: nothing to hold datasets to
        return LocalFiles(data_files=kept, expected=tuple(found))
    if not glob.has_magic(path) or local.exists():
        return LocalFiles()
    files = glob_data_files(path, left_out, setting)
    if isinstance(data_files, str):  # `corpus/**/*.txt`: one format by its name
        return LocalFiles(data_files=files)
    matched = files if files is not None else sorted(glob.glob(str(local), recursive=True))
    data = [os.path.abspath(f) for f in matched if os.path.isfile(f) and file_format(f)]
    if not data:
        return LocalFiles()  # datasets says it finds no data file
    builder = Counter(map(file_format, data)).most_common(1)[0][0]
    kept = [f for f in data if file_format(f) == builder]
    refuse_unread(data, kept, str(builder), path)
    return LocalFiles(builder=builder, data_files=kept)


def card_names_files(folder: Path) -> bool:
    """Whether the folder's dataset card (README.md's YAML header) names its data files, which
    datasets then reads instead of finding them by its own rules."""
    card = folder / DATASET_CARD
    try:
        if not card.read_text(encoding="utf-8").startswith("---"):  # no YAML header
            return False
        from huggingface_hub import DatasetCard

        return bool(DatasetCard.load(card).data.to_dict().get("configs"))
    except Exception:  # no card, or one datasets says is broken when it reads it
        return False


def folder_data_files(
    folder: Path, left_out: Mapping[str, Path], setting: str
) -> tuple[dict[str, list[str]] | None, list[str]]:
    """The data files datasets would find in the local `folder` (given as `setting`), by split,
    in its order, without those under `left_out` folders (by the setting that names them) or in
    what lmtrain wrote under other settings (`lmtrain_folder`: a run's logs and checkpoints, a
    token cache), or None if nothing is left out, for datasets to find the files itself; and
    every file of a format lmtrain reads that datasets' search reaches (`refuse_unread`).

    Datasets' split rules (a file named train.* is train, ...) have no public hook for a filter,
    so its pattern search is run with a resolver that never returns a left-out file.
    """
    if not folder.is_dir():
        return None, []
    root = folder.resolve()
    given = Path(os.path.abspath(folder))  # how datasets names the files: links not resolved
    inside = {k: f for k, f in left_out.items() if f.is_relative_to(root)}
    try:  # datasets' private search (no public hook); another version may not have it
        from datasets.data_files import _get_data_files_patterns, resolve_pattern
    except ImportError:
        if not inside:
            return None, []
        key, inner = next(iter(inside.items()))
        raise LMTrainError(
            f"{setting}='{folder}' holds {key}={inner}, which this datasets version cannot leave "
            f"out of the dataset's files: move {key} out of that folder"
        ) from None
    dropped: dict[str, set[str]] = {}
    written: dict[Path, None] = {}  # lmtrain's own folders under the corpus folder
    kinds: dict[Path, str | None] = {}
    found: dict[str, None] = {}  # every file the search reached, in its order

    def resolve(pattern: str) -> list[str]:
        kept = []
        for file in resolve_pattern(pattern, base_path=str(folder)):
            real = Path(file).resolve()
            key = next((k for k, f in inside.items() if real.is_relative_to(f)), None)
            ours = lmtrain_folder(Path(file), given, kinds) if key is None else None
            if key is not None:
                dropped.setdefault(key, set()).add(file)
            elif ours is not None:
                written[ours] = None
            else:
                kept.append(file)
                found[file] = None
        return kept

    try:
        patterns = _get_data_files_patterns(resolve)
    except FileNotFoundError:  # no data file at all
        patterns = {}
    kept: dict[str, list[str]] = {}
    for split, split_patterns in patterns.items():
        files: dict[str, None] = {}  # in datasets' order, each file once
        for pattern in split_patterns:
            with contextlib.suppress(FileNotFoundError):
                files |= dict.fromkeys(resolve(pattern))
        kept[str(split)] = list(files)  # str: datasets' NamedSplit is not JSON
    card = str(given / DATASET_CARD)
    data = [f for f in found if file_format(f) and f != card]
    if not inside and not written:
        # Nothing to leave out: datasets finds the same files itself, and the token cache's
        # fingerprint stays what it was before runs were looked for here.
        return None, data
    log_left_out(setting, written, {k: (len(f), inside[k]) for k, f in dropped.items()})
    if not any(kept.values()):
        raise LMTrainError(
            f"{setting} holds no data files besides {', '.join(dropped) or 'what lmtrain wrote'}: "
            "pass a folder with json, jsonl, parquet or text files"
        )
    return kept, data


def glob_data_files(pattern: str, left_out: Mapping[str, Path], setting: str) -> list[str] | None:
    """The files the glob `pattern` matches, sorted, without what lmtrain wrote under the folder
    it starts from (as `folder_data_files` leaves out of a folder), or None if that leaves out
    none of the files it matches (`corpus/*.jsonl` beside `corpus/cache/`): datasets resolves the
    glob itself, and the token cache's fingerprint stays what it was."""
    local = Path(pattern).expanduser()
    root = glob_root(local)
    inside = {k: f for k, f in left_out.items() if f.is_relative_to(root.resolve())}
    dropped: dict[str, int] = {}
    written: dict[Path, None] = {}
    kinds: dict[Path, str | None] = {}
    kept = []
    for match in sorted(filter(os.path.isfile, glob.glob(str(local), recursive=True))):
        real = Path(match).resolve()
        key = next((k for k, f in inside.items() if real.is_relative_to(f)), None)
        ours = lmtrain_folder(Path(match), root, kinds) if key is None else None
        if key is not None:
            dropped[key] = dropped.get(key, 0) + 1
        elif ours is not None:
            written[ours] = None
        else:
            kept.append(os.path.abspath(match))
    parts = local.relative_to(root).parts
    reached = [f for f in inside.values() if reaches(parts, f.relative_to(root.resolve()).parts)]
    if not dropped and not written and not reached:
        return None  # it can match no left-out file (`corpus/*.jsonl`, `corpus/cache`): as given
    log_left_out(setting, written, {k: (n, inside[k]) for k, n in dropped.items()})
    if not kept and (dropped or written):
        raise LMTrainError(
            f"{setting} matches no files besides {', '.join(dropped) or 'what lmtrain wrote'}: "
            "pass a glob of json, jsonl, parquet or text files apart from them"
        )
    return kept or None  # none matched at all: datasets' own "no file" line


def reaches(pattern: tuple[str, ...], folder: tuple[str, ...]) -> bool:
    """Whether the glob `pattern` (its parts below its root) can match a file under `folder`
    (its parts below the same root), now or once a run writes there: a left-out folder the
    glob can reach turns the glob into its list of kept files in every run, one it cannot
    leaves the glob as given, so the token cache's fingerprint holds from one run to the next."""
    if not folder:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return reaches(pattern[1:], folder) or reaches(pattern, folder[1:])
    return fnmatch.fnmatchcase(folder[0], pattern[0]) and reaches(pattern[1:], folder[1:])


def log_left_out(
    setting: str, written: Iterable[Path], dropped: Mapping[str, tuple[int, Path]]
) -> None:
    """Say what was left out of the corpus, in `data=text_files`'s words."""
    written = list(written)
    if written:
        log.warning(
            "Left out of the corpus what lmtrain wrote under %s (token caches, runs, sweeps): %s",
            setting,
            ", ".join(map(str, written)),
        )
    for key, (count, folder) in dropped.items():
        log.info(
            "Left %d files under %s=%s out of the corpus (a run writes there)", count, key, folder
        )


def refuse_unread(expected: Collection[str], read: Iterable[str], builder: str, path: str) -> None:
    """Refuse data.source.path=`path` if the `builder` datasets picked leaves out some of the
    `expected` data files: it reads one format, that of the folder's most common files, and
    drops the rest without a word. Plain-text files alone left out are only logged: beside the
    data they are notes, licenses and changelogs (a json folder's CHANGELOG.md)."""
    seen = {os.path.realpath(f) for f in read}
    unread = [f for f in expected if os.path.realpath(f) not in seen]
    local = Path(path).expanduser()
    base = local if local.is_dir() else glob_root(local)
    structured = [f for f in unread if file_format(f) != TEXT]
    ordered = structured + [f for f in unread if f not in structured]
    names = [os.path.relpath(f, base) for f in ordered]
    if not structured:
        if unread:
            log.info(
                "data.source.path=%r: the %s dataset leaves out plain-text side files, read as "
                "notes, not data: %s",
                path,
                builder,
                named(names),
            )
        return
    # The suggested glob names the records the user most likely wants, not a side note.
    formats = Counter(Path(f.removesuffix(compression_suffix(f))).suffix for f in structured)
    example = os.path.join(base, "**", f"*{formats.most_common(1)[0][0]}")
    raise LMTrainError(
        f"data.source.path={path!r} holds data files of more than one format, and a dataset "
        f"reads one ({builder}): it would leave out {named(names)}: pass a glob of one format, "
        f"e.g. data.source.path='{example}', "
        "or data=text_files to read every file (.jsonl as records, the rest as plain text)"
    )


def named(names: list[str]) -> str:
    """`names` in a message: the one name, or a count and the first few."""
    if not names[1:]:
        return names[0]
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return f"{len(names)} files: {', '.join(names[:NAMED])}{more}"
