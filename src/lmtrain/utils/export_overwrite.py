"""What `overwrite=true` keeps of a previous export: every entry an export does not write.

An export lists its files in its `lmtrain.json` (`record_files`); a later export into the same
folder replaces those, and the files it writes itself, and carries everything else (the `.git/`
of a Hugging Face repo clone, a user's notes or `ema.safetensors`) into the new folder
(`carry_over`). Split from `lmtrain.utils.export_dir`, which decides whether the folder may be
replaced at all.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from fnmatch import fnmatch
from pathlib import Path

from lmtrain.errors import LMTrainError
from lmtrain.utils.export_dir import EXPORT_META

# lmtrain.json's list of the files the export wrote (`record_files`).
FILES_KEY = "files"
# The files an export writes at the top of its folder (transformers' and peft's save_pretrained,
# the tokenizer, the model card, lmtrain.json), by name, past and present: the only entries of a
# previous export that `overwrite=true` replaces, and of those only the ones its lmtrain.json
# lists (all of them for an export that lists none, made before the list). A stale one left in
# place would be read with the new ones (an old adapter_config.json turns a merged export back
# into an adapter folder).
EXPORT_FILES = (
    "config.json",
    "generation_config.json",
    "README.md",
    EXPORT_META,
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
    "adapter_model.bin",
    "tokenizer*.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.j*",
)


def record_files(folder: Path) -> None:
    """List in `folder`'s lmtrain.json the files the finished export holds, so that a later
    overwrite=true replaces them and no file of the user's that only looks like one."""
    path = folder / EXPORT_META
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta[FILES_KEY] = sorted(os.listdir(folder))
    path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def recorded_files(folder: Path) -> set[str] | None:
    """The files the export in `folder` listed as its own; None when its lmtrain.json lists none
    (an export made before the list) or cannot be read."""
    try:
        meta = json.loads((folder / EXPORT_META).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    files = meta.get(FILES_KEY) if isinstance(meta, dict) else None
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return set(files)


def carry_over(out_dir: Path, tmp: Path, given: str) -> list[str]:
    """Put into `tmp` (the new export) every entry of the previous export `out_dir` that an export
    does not write; return their names.

    They are hard links (a copy where the file system has none), so `out_dir` stays whole until
    the rename and a killed export's `tmp` holds nothing that exists only there. Folders and links
    are always kept: an export writes plain files only. `given`: out_dir as the user typed it.
    """
    if not out_dir.is_dir():
        return []
    written = set(os.listdir(tmp))
    recorded = recorded_files(out_dir)

    def replaced(name: str) -> bool:
        """The new export's, or the previous one's (a list narrows the patterns, never widens:
        a lmtrain.json from elsewhere cannot name a user's notes)."""
        if name in written:
            return True
        return any(fnmatch(name, p) for p in EXPORT_FILES) and (
            recorded is None or name in recorded
        )

    kept = []
    for name in sorted(os.listdir(out_dir)):
        source, plain = out_dir / name, stat.S_ISREG((out_dir / name).lstat().st_mode)
        if plain and replaced(name):
            continue
        if name in written:
            raise LMTrainError(
                f"out_dir={given!r} holds {name!r}, which is not a file but has the name of one "
                "the export writes: move it out of out_dir, or pass a new out_dir"
            )
        try:
            if source.is_symlink():
                os.symlink(os.readlink(source), tmp / name)
            elif source.is_dir():
                shutil.copytree(source, tmp / name, symlinks=True, copy_function=link_or_copy)
            else:
                link_or_copy(str(source), str(tmp / name))
        except OSError as err:
            raise LMTrainError(
                f"out_dir={given!r} holds {name!r}, which overwrite=true keeps, but it could not "
                f"be carried into the new export ({failure(err)}); nothing was changed: move it "
                "out of out_dir, or pass a new out_dir"
            ) from None
        kept.append(name)
    return kept


def link_or_copy(source: str, target: str) -> None:
    """A hard link to `source` at `target`, or a copy of it where links fail (another file
    system, links refused): copytree's copy_function for kept files."""
    try:
        os.link(source, target, follow_symlinks=False)
    except OSError:
        if not stat.S_ISREG(os.lstat(source).st_mode):
            raise  # a fifo or device: copying it would block or read forever
        shutil.copy2(source, target, follow_symlinks=False)


def failure(err: OSError) -> str:
    """What went wrong, in words: shutil.Error holds a list of (source, target, why)."""
    if isinstance(err, shutil.Error) and err.args and isinstance(err.args[0], list):
        source, _, why = err.args[0][0]
        return f"{why}: {source}"
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or err}{where}"
