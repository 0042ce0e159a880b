"""The one door for checkpoint files read from disk: nothing in them may run code.

A pickle can call any function while it loads, and a checkpoint may come from anyone (a shared
folder, a download). So every checkpoint is read here, with only plain data let through:

- a `.ckpt` / `meta.pt` file: `torch.load(weights_only=True)`, which refuses every global but
  tensors and plain containers (passed explicitly: `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` turns an
  unset `weights_only` into False);
- a torch.distributed.checkpoint (DCP) folder, as FSDP writes it: torch reads its `.metadata`
  with a plain unpickler and its non-tensor entries with weights-only loading off. Here
  `.metadata` goes through an unpickler that knows only the classes DCP's `Metadata` is made of,
  and the entries through `weights_only=True` (`SafeFileSystemReader`, `SafeLoadPlanner`);
  its files are compared with the checksums its `meta.pt` holds (`lmtrain.utils.shard_digest`).

Any failure is one `LMTrainError` line naming the file.
"""

from __future__ import annotations

import errno
import io
import pickle
import re
import zipfile
from pathlib import Path, PurePath
from typing import IO, Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._nested_dict import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import (
    DefaultLoadPlanner,
    _EmptyStateDictLoadPlanner,
)
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils import shard_digest
from lmtrain.utils.damaged_checkpoint import WRITTEN_BY, instead, sharded_folder_of
from lmtrain.utils.sharded_layout import SHARDED_META_FILE, metadata_folder, one_file_advice
from lmtrain.utils.tensor_digest import verify

# Every global a DCP `.metadata` pickle names (torch 2.13, checked on real checkpoints of a model
# with AdamW state, written by one process and by two FSDP2 ranks): the metadata dataclasses, the
# per-entry storage info, the tensor shape, layout and dtype, and the folder path it was saved to.
DCP_METADATA_GLOBALS = frozenset(
    {
        ("torch.distributed.checkpoint.metadata", "Metadata"),
        ("torch.distributed.checkpoint.metadata", "StorageMeta"),
        ("torch.distributed.checkpoint.metadata", "MetadataIndex"),
        ("torch.distributed.checkpoint.metadata", "TensorStorageMetadata"),
        ("torch.distributed.checkpoint.metadata", "BytesStorageMetadata"),
        ("torch.distributed.checkpoint.metadata", "ChunkStorageMetadata"),
        ("torch.distributed.checkpoint.metadata", "TensorProperties"),
        ("torch.distributed.checkpoint.metadata", "_MEM_FORMAT_ENCODING"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),  # how a torch.layout pickles: by its name
        ("pathlib", "PosixPath"),  # StorageMeta.checkpoint_id
        ("pathlib", "WindowsPath"),
    }
    # A dtype pickles as the global `torch.<name>`: the dtype objects, and nothing else of torch.
    | {("torch", name) for name, value in vars(torch).items() if isinstance(value, torch.dtype)}
)
# The path itself not read, by errno: what it is and what to pass instead (not "move it aside").
NOT_READ = {
    errno.ENOENT: "does not exist: pass the path of a .ckpt file",
    errno.ENOTDIR: "names a file as a folder (a trailing /?): pass the .ckpt file's own path",
    errno.EISDIR: "is a folder, not a checkpoint file: pass a .ckpt file inside it",
    errno.EACCES: "cannot be read (permission denied): make it readable (chmod u+r) or copy it",
}
# torch.load(mmap=True)'s words for a file that is not zip-format (torch.save's legacy format,
# a plain pickle): it refuses it before reading any of it.
NOT_ZIP = "mmap can only be used with files saved with"


def load_torch_file(path: str | Path) -> Any:
    """A `torch.save` file's tensors (memory-mapped, on CPU) and plain values, nothing else."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise checkpoint_error(path, err, "checkpoint") from None
    verify(checkpoint, path)  # damaged on disk since it was written
    return checkpoint


CHECKPOINT_KEY = "lmtrain"  # lmtrain's own entry in its checkpoints (models.checkpoint_contents)


def saved_state(path: str | Path) -> dict[str, Any] | None:
    """A checkpoint's top-level entries (of a sharded folder, its `meta.pt`'s), its tensors
    memory-mapped, not read; None where it cannot be read (the loader names a damaged file)."""
    file = Path(path) / SHARDED_META_FILE if Path(path).is_dir() else Path(path)
    try:  # a regular file only: open() of a FIFO (ckpt_path=<fifo>) would wait for ever
        got = file.is_file() and torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return got if isinstance(got, dict) else None


def saved_step(path: str | Path) -> int | None:
    """The optimizer step (`global_step`) a checkpoint was saved at; None if it cannot be read."""
    state = saved_state(path)
    step = state.get("global_step") if state is not None else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def checkpoint_error(path: str | Path, err: BaseException, what: str) -> LMTrainError:
    """One line for a checkpoint that failed to load: refused as unsafe, or unreadable."""
    if isinstance(err, LMTrainError):
        return err
    name = f"ckpt_path={str(path)!r}"
    named = err.filename in (None, str(path)) if isinstance(err, OSError) else False
    if what == "checkpoint" and named and err.errno in NOT_READ:  # not a DCP folder's advice
        return LMTrainError(f"{name} {NOT_READ[err.errno]}")
    refusal = refused_global(err)
    if refusal:
        return LMTrainError(
            f"ckpt_path={str(path)!r} holds pickled objects that are not checkpoint data "
            f"({refusal}) and was not loaded, as loading them could run code: {WRITTEN_BY}"
        )
    folder = sharded_folder_of(Path(path)) or metadata_folder(path)
    if folder and what == "checkpoint":  # not damaged: a shard, or a folder's .metadata, alone
        return LMTrainError(f"{name} is no checkpoint on its own: {one_file_advice(folder)}")
    if NOT_ZIP in str(err):  # torch's advice is to save it again, with mmap in mind
        return LMTrainError(
            f"ckpt_path={str(path)!r} is not a readable {what}: not a zip-format torch file "
            "(damaged, or an old or foreign save: torch's legacy format, a plain pickle), and "
            f"was not loaded: {instead(path)}"
        )
    if cut_short(path):  # torch says only "[Errno 22] Invalid argument"
        return LMTrainError(
            f"ckpt_path={str(path)!r} is not a readable {what}: a zip-format torch file cut "
            "short (a copy or download that did not finish, or a full disk), and was not "
            f"loaded: copy it again, or {instead(path)}"
        )
    return LMTrainError(f"{name} is not a readable {what} ({first_line(err)}): {instead(path)}")


def cut_short(path: str | Path) -> bool:
    """A file that begins as a zip archive (torch.save's format) and lacks the directory a zip
    archive ends with."""
    try:
        with open(path, "rb") as file:
            return file.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)
    except OSError:
        return False


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that is not allowed in the file being read."""


def refused_global(err: BaseException) -> str | None:
    """What an unpickler refused (`Unsupported global: GLOBAL getattr ...`), None for other errors.
    torch's weights-only message is a dozen lines, most of them on how to load the file with
    weights-only loading off: only the refused global is kept.
    """
    if isinstance(err, RefusedGlobal):
        return str(err)
    marker = "WeightsUnpickler error:"
    if isinstance(err, pickle.UnpicklingError) and marker in str(err):
        text = str(err).split(marker, 1)[1].strip()
        return text.split(". ")[0].splitlines()[0].strip().rstrip(".")
    # torch 2.13's words for a global of a blocked module (os.system, subprocess...):
    # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked".
    blocked = re.search(r"unsupported GLOBAL \S+", str(err))
    if isinstance(err, pickle.UnpicklingError) and blocked:
        return blocked[0]
    return None


def pickle_refusal(err: BaseException) -> str | None:
    """What weights-only loading refused in `err` (the global, when torch names one), or None
    when `err` is no refusal of a pickle."""
    if isinstance(err, pickle.UnpicklingError | RefusedGlobal):
        return refused_global(err) or "refused by weights-only loading"
    return None


class MetadataUnpickler(pickle.Unpickler):
    """Unpickles a DCP `.metadata` file, refusing every global not in DCP_METADATA_GLOBALS."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in DCP_METADATA_GLOBALS:
            raise RefusedGlobal(f"unsupported global {module}.{name}")
        return super().find_class(module, name)


def read_dcp_metadata(stream: IO[bytes], path: str | Path) -> Metadata:
    """The `Metadata` pickled in `stream` (the file `path`), or a one-line LMTrainError."""
    try:
        metadata = MetadataUnpickler(stream).load()
    except Exception as err:
        raise checkpoint_error(path, err, "DCP metadata file") from None
    if not isinstance(metadata, Metadata):
        raise LMTrainError(
            f"ckpt_path={str(path)!r} holds a {type(metadata).__name__}, not DCP metadata: "
            f"{WRITTEN_BY}"
        )
    # The reader joins each entry's file name onto the folder: `../x` or an absolute path
    # would read a file outside it (DCP's own writers name plain files, `__0_0.distcp`).
    for info in (getattr(metadata, "storage_data", None) or {}).values():
        name = getattr(info, "relative_path", None)
        if not isinstance(name, str) or name != PurePath(name).name or name in ("", ".", ".."):
            raise LMTrainError(
                f"ckpt_path={str(path)!r} names {name!r} as a file of its checkpoint, which is "
                f"not a plain file name (crafted or damaged?): {WRITTEN_BY}"
            )
    return metadata


class SafeFileSystemReader(FileSystemReader):
    """torch's DCP `FileSystemReader`, with `.metadata` read by `MetadataUnpickler`: torch's
    `read_metadata` unpickles it with no restriction (the lines after the read are torch's)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as stream:
            metadata = read_dcp_metadata(stream, path)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """torch's `DefaultLoadPlanner` (load into an existing state dict), non-tensor entries
    (optimizer hyperparameters, steps, any plain value) read with `weights_only=True`."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        # torch's own load_bytes is these lines with weights-only loading off.
        fqn = read_item.dest_index.fqn
        try:
            obj = torch.load(value, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            refusal = refused_global(err)
            if refusal is None:
                raise
            raise RefusedGlobal(f"entry {fqn}: {refusal}") from None
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


class SafeEmptyStateDictLoadPlanner(SafeLoadPlanner, _EmptyStateDictLoadPlanner):
    """torch's `_EmptyStateDictLoadPlanner` (rebuild the state dict from the metadata, as
    `dcp_to_torch_save` does), with `SafeLoadPlanner.load_bytes`."""


def read_dcp_folder_metadata(folder: str | Path) -> Metadata:
    """The `.metadata` of the DCP checkpoint `folder`, read safely, or a one-line LMTrainError.
    Read it with this before handing the folder to `dcp.load`: torch logs a failed metadata read
    with its traceback and then looks for per-rank metadata instead.
    """
    reader = SafeFileSystemReader(folder)
    path = Path(reader._get_metadata_path())
    if not path.is_file():
        raise LMTrainError(
            f"ckpt_path={str(folder)!r} has no {path.name}: it is not a torch.distributed."
            f"checkpoint folder, or its save did not finish; {WRITTEN_BY}"
        )
    shard_digest.check_recorded(Path(folder), recorded_digests(folder))
    return reader.read_metadata()


def recorded_digests(folder: str | Path) -> Any:
    """The checksums of a DCP folder's files its `meta.pt` holds (`shard_digest`), or None."""
    meta = Path(folder) / SHARDED_META_FILE
    checkpoint = load_torch_file(meta) if meta.is_file() else None
    return checkpoint.get(shard_digest.SHARD_DIGESTS_KEY) if isinstance(checkpoint, dict) else None


def load_dcp_folder(folder: str | Path, keys: set[str] | None = None) -> dict[str, Any]:
    """A whole DCP checkpoint folder as one nested state dict of CPU tensors and plain values.
    Runs in one process without a process group, whatever the number of ranks that wrote it, so
    it needs the memory of the whole checkpoint. `keys` limits it to those entries (flattened
    names, e.g. `model.lm_head.weight`); without `keys` every file is hashed first.
    """
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    read_dcp_folder_metadata(folder)
    if keys is None:  # every file is read: every file's bytes checked first
        shard_digest.verify(Path(folder), recorded_digests(folder))
    state: dict[str, Any] = {}
    try:
        # The private loader, as torch's own dcp_to_torch_save: the public `dcp.load` only
        # fills the keys already in `state`, and here there are none yet.
        _load_state_dict(
            state,
            storage_reader=SafeFileSystemReader(folder),
            planner=SafeEmptyStateDictLoadPlanner(keys=keys),
            no_dist=True,
        )
    except CheckpointException as err:  # a BaseException: it holds each rank's exception
        cause = next(iter(err.failures.values()))[0]
        raise checkpoint_error(folder, cause, "DCP checkpoint") from None
    except Exception as err:
        raise checkpoint_error(folder, err, "DCP checkpoint") from None
    return state


def check_dcp_folder(folder: str | Path) -> Metadata:
    """Read what of a DCP folder is unpickled (`.metadata`, the non-tensor entries) as
    `load_dcp_folder` reads it; the tensors stay on disk (torch reads them weights-only). Run it
    before torch's own reader and planner read the folder (Lightning's FSDPStrategy resume), so
    a crafted folder stops here."""
    metadata = read_dcp_folder_metadata(folder)
    plain = {
        fqn
        for fqn, entry in metadata.state_dict_metadata.items()
        if isinstance(entry, BytesStorageMetadata)
    }
    if plain:
        load_dcp_folder(folder, keys=plain)
    return metadata
