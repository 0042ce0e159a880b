"""What to do instead of reading a damaged checkpoint: the advice of every line that refuses one.

The advice used to be the same everywhere ("pass a checkpoint written by lmtrain.train, e.g.
<run folder>/checkpoints/last.ckpt"), which for a damaged last.ckpt named the damaged file
itself; and "ckpt_path=<a best checkpoint>" is refused beside `resume=`. Found by a red team:
what works for a damaged last.ckpt is to move it aside, after which `resume=` and `ckpt_path=last`
go on from the newest other checkpoint of the folder. The file named is one lmtrain wrote (red
team api23: another tool's Lightning checkpoint beside it was named), under the key its caller
takes: `ckpt_path=` on the command line and for `Trainer.fit`, `checkpoint_path=` within
`CausalLMModule.load_from_checkpoint` (`advice_key`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import torch

from lmtrain.utils.sharded_layout import (
    SHARDED_META_FILE,
    is_sharded_checkpoint,
    one_file_advice,
)

WRITTEN_BY = "pass a checkpoint written by lmtrain.train, e.g. <run folder>/checkpoints/last.ckpt"
# The names lmtrain gives checkpoints besides last.ckpt (configs/callbacks/default.yaml's best
# checkpoint, step-named saves) and the file `lmtrain.strategies consolidate` writes.
LMTRAIN_PREFIXES = ("best-", "step=")
CONSOLIDATED = ".consolidated.ckpt"
# lmtrain's own entry in its checkpoints and what it holds (`lmtrain.utils.safe_load`'s
# CHECKPOINT_KEY and `lmtrain.models.checkpoint_contents`' MODEL_KEYS; safe_load imports this).
LMTRAIN_ENTRY = "lmtrain"
LMTRAIN_ENTRY_KEYS = ("hf_config", "tokenizer_files")
# The keyword under which the advice names a checkpoint to pass: set by the caller that knows it.
ADVICE_KEY: ContextVar[str] = ContextVar("advice_key", default="ckpt_path")


@contextmanager
def advice_key(key: str) -> Iterator[None]:
    """Within it, the advice names the checkpoint to pass as `key=` (`checkpoint_path` for
    `CausalLMModule.load_from_checkpoint`; `ckpt_path`, the command line's, elsewhere)."""
    token = ADVICE_KEY.set(key)
    try:
        yield
    finally:
        ADVICE_KEY.reset(token)


def newest_other(damaged: Path, named_first: bool = True) -> Path | None:
    """The newest other checkpoint beside `damaged` (a `*.ckpt` file, or a sharded folder), by
    time written, as `resume=` picks one without a last.ckpt
    (`lmtrain.models.checkpoint_paths.newest_checkpoint`, a layer above this one), but only one
    the tools would accept (`loads_as_lmtrain_checkpoint`): an empty file, a copy cut short, a
    torch-saved list, a pickle that calls os.system or another tool's Lightning checkpoint was
    named as the one to pass, and then refused;
    `named_first`: one named as lmtrain names its saves (`lmtrain_named`) before any other. None
    when there is none or the folder cannot be read."""
    try:
        found = [
            p
            for p in damaged.parent.glob("*.ckpt")
            if p.name != damaged.name
            and not p.name.startswith(".")
            and ((p.is_file() and looks_readable(p)) or is_sharded_checkpoint(p))
        ]
        found.sort(key=lambda p: (named_first and lmtrain_named(p), p.stat().st_mtime_ns, p.name))
    except OSError:
        return None
    # Best first, and only until one loads: each load unpickles a file's entries.
    return next((p for p in reversed(found) if loads_as_lmtrain_checkpoint(p)), None)


def loads_as_lmtrain_checkpoint(path: Path) -> bool:
    """Whether `path` (a `.ckpt` file, or a sharded folder's `meta.pt`) unpickles with
    weights-only loading, as `lmtrain.utils.safe_load` reads checkpoints (a layer beside this
    one, which imports it), to what lmtrain writes (`holds_lmtrain_entries`): a pickled global
    that could run code is refused, not run. The tensors are memory-mapped, not read, so a
    checkpoint of any size costs the unpickling of its plain entries only; their checksums are
    not compared (that reads every byte)."""
    file = path / SHARDED_META_FILE if path.is_dir() else path
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # refused, damaged or unreadable: any of them rules it out as advice
        return False
    return holds_lmtrain_entries(state, weights=not path.is_dir())


def holds_lmtrain_entries(state: Any, weights: bool) -> bool:
    """Whether `state` holds lmtrain's own entry (the HF config and tokenizer files that eval,
    generate and export rebuild the model from) and, where `weights` (not a sharded folder's
    meta file, whose shards hold them), a state_dict: what `check_contents` asks of it."""
    if not isinstance(state, Mapping) or (weights and not state.get("state_dict")):
        return False
    entry = state.get(LMTRAIN_ENTRY)
    return isinstance(entry, Mapping) and all(entry.get(key) for key in LMTRAIN_ENTRY_KEYS)


def lmtrain_named(path: Path) -> bool:
    """Whether `path` has a name lmtrain gives its checkpoints: last.ckpt, the best checkpoint
    (best-step=...), a step-named save, or a sharded folder's consolidated file."""
    name = path.name
    return name == "last.ckpt" or name.startswith(LMTRAIN_PREFIXES) or name.endswith(CONSOLIDATED)


def looks_readable(path: Path) -> bool:
    """Whether `path` is a zip-format torch file whose pickle opens with a dict, as every
    checkpoint does, judged from its zip directory and the pickle's first bytes: never
    unpickled (the file may be crafted), and cheap for a file of any size."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1 or f"{pickles[0][: -len('data.pkl')]}version" not in names:
                return False
            with archive.open(pickles[0]) as stream:
                head = stream.read(16)
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile):
        return False
    if head[:1] == pickle.PROTO:  # protocol 2 and up: PROTO <version>
        head = head[2:]
    if head[:1] == pickle.FRAME:  # protocol 4 and up: FRAME <8-byte length>
        head = head[9:]
    return head[:1] == pickle.EMPTY_DICT


def sharded_folder_of(path: Path) -> Path | None:
    """The sharded checkpoint folder (trainer=fsdp: `.metadata`, `meta.pt`, `*.distcp`) that
    `path`, a shard, is one file of, else None: a shard given as ckpt_path read as a damaged zip
    file."""
    folder = path.parent
    if path.suffix != ".distcp":  # meta.pt and .metadata are read as the folder's, and named so
        return None
    try:
        sharded = is_sharded_checkpoint(folder) and (folder / ".metadata").is_file()
    except OSError:
        return None
    return folder if sharded and path.is_file() else None


def consolidated_file(folder: Path) -> Path:
    """Where `python -m lmtrain.strategies consolidate <folder>` writes the merged file by
    default (`lmtrain.strategies.consolidate`, a layer above this one): `<name>.consolidated.ckpt`
    beside the folder."""
    return folder.with_name(f"{folder.name.removesuffix('.ckpt')}{CONSOLIDATED}")


def one_file(other: Path, key: str) -> str:
    """`key=other` for eval, generate, export and `load_from_checkpoint`, which read one file: a
    sharded folder named there was refused ("merge it into one file first", red team dist26), so
    for one its consolidated file if that is there and loads, else the command that writes it."""
    if not other.is_dir():
        return f"{key}={other}"
    merged = consolidated_file(other)
    if merged.is_file() and loads_as_lmtrain_checkpoint(merged):
        return f"{key}={merged}"
    return (
        f"{key}={merged} once `python -m lmtrain.strategies consolidate {other}` has merged the "
        "folder into it"
    )


def instead(damaged: str | Path) -> str:
    """The advice for the damaged checkpoint `damaged`: for a run's last.ckpt, to move it aside
    so that `resume=` takes the newest other checkpoint; else to pass that one. For one file of
    a sharded folder: the folder, or its consolidated file. Where the other checkpoint is a
    sharded folder, the readers of one file are told to consolidate it (`one_file`)."""
    path = Path(damaged)
    folder = sharded_folder_of(path)
    if folder is not None:
        return one_file_advice(folder)
    # After a damaged last.ckpt is moved aside, resume= takes the newest file, whatever its name.
    other = newest_other(path, named_first=path.name != "last.ckpt")
    if other is None:
        return WRITTEN_BY
    key = ADVICE_KEY.get()
    if path.name == "last.ckpt":
        where = "eval, generate, export" if key == "ckpt_path" else "or load"
        return (
            f"move it aside (mv {path} {path}.damaged): resume= and ckpt_path=last then go on "
            f"from {other.name} ({where}: {one_file(other, key)})"
        )
    if key == "ckpt_path" and other.is_dir():  # a sharded folder resumes with trainer=fsdp only
        return (
            f"pass another checkpoint, e.g. ckpt_path={other} with trainer=fsdp "
            f"(eval, generate, export: {one_file(other, key)})"
        )
    return f"pass another checkpoint, e.g. {one_file(other, key)}"
