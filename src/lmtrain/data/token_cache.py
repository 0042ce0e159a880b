"""The token cache: a corpus tokenized once into flat memory-mapped token files, reused by runs.

A cache folder is `<cache_dir>/<fingerprint>/` holding `train.bin` and `val.bin` (token ids, one
end-of-text token after each document, nanoGPT's format), `tokenizer/` (`save_pretrained` output)
and `meta.json`. The fingerprint is computed without reading the corpus (see `fingerprint`), so
finding an existing cache costs a few stat calls even for a corpus of many GB.

A folder is written under a temporary name and renamed into place when complete, so an interrupted
build never leaves a folder that a later run trusts: the next build removes the leftovers and starts
over. A disk that fills up mid-build ends the run with one line and leaves no partial folder; the
other caches of `cache_dir` stay as they were. Anything read back is untrusted: a folder that is
damaged, edited or swapped in from another cache (meta.json missing, of another shape or naming
another folder; a .bin of the wrong size or checksum or with ids outside the vocabulary; a
tokenizer that is not the one saved with it) is removed and rebuilt with a warning, unless the
folder is a symbolic link: that is used when complete, and otherwise refused in one line (its
target, someone's folder, is never removed or written through). Builds hold an
exclusive lock on `<fingerprint>.lock`, so when several processes of a node (DDP, torchrun) prepare
at once, one builds and the others wait and then open the same files. A killed builder's lock is
released by the kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from lmtrain.data.cache_checks import FORMAT_VERSION, find_problem, token_dtype

# Re-exported: the data module, eval and tests read caches through this module.
from lmtrain.data.cache_checks import load_meta as load_meta
from lmtrain.data.cache_checks import load_tokenizer as load_tokenizer
from lmtrain.data.checksums import file_checksums, folder_checksums
from lmtrain.data.corpus import MB, SPLITS, Source, utf8_len
from lmtrain.data.encode import default_workers, encode_corpus
from lmtrain.data.piece_cuts import counting_forced_cuts, warn_forced_cuts
from lmtrain.data.pretrained_tokenizer import save_tokenizer
from lmtrain.data.source_arguments import unsettled_arguments
from lmtrain.data.tokenizers import TokenizerSettings
from lmtrain.errors import LMTrainError
from lmtrain.utils import locks
from lmtrain.utils.io import NO_SPACE

log = logging.getLogger(__name__)


def fingerprint(source: Source, tokenizer: TokenizerSettings) -> str:
    """sha256 of what the tokens depend on, computed without reading the corpus.

    It covers this format's version, the source's class, its settings (path, split fraction, ...)
    and its identity (each file's relative path, size and mtime; for a Hugging Face dataset its
    builder config and data-files hash, which track local mtimes and hub revisions), and the
    tokenizer settings that matter (`TokenizerSettings.fingerprint`), including the size of the BPE
    training sample. Editing a file or a setting gives a new folder; the same inputs find the old
    one without reading a byte of text; so do a subclass's own arguments (`unsettled_arguments`).
    Not covered: a file rewritten with the same size and mtime, or an edit of a source's code.
    """
    header = {
        "format_version": FORMAT_VERSION,
        "source": f"{type(source).__module__}.{type(source).__qualname__}",
        "source_settings": source.settings(),
        "source_identity": source.identity(),
        "tokenizer": tokenizer.fingerprint(),
    }
    if arguments := unsettled_arguments(source):  # only then: shipped sources' caches stay valid
        header["source_arguments"] = arguments
    return hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()


def build_or_load(
    cache_dir: str | os.PathLike[str],
    source: Source,
    tokenizer: TokenizerSettings,
    workers: int | None = None,
    chunk_mb: float = 1.0,
) -> Path:
    """The cache folder for this source and tokenizer, built first if it is missing or damaged.

    `workers` tokenizer processes (None: every core) encode chunks of `chunk_mb` MB of text; the
    resulting files do not depend on either.
    """
    key = fingerprint(source, tokenizer)
    cache_dir = Path(cache_dir)
    folder = cache_dir / key
    if folder.exists() and find_problem(folder) is None:
        log.info("Reusing token cache %s", folder)
        return folder
    _refuse_link(folder)  # never rebuilt through (nor removed): its target is someone's folder
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # under a file, read-only, not ours: one line, not a traceback
        raise _unwritable(cache_dir, "created", err) from None
    with _exclusive_lock(cache_dir / f"{key}.lock"):
        _refuse_link(folder)  # made by another process meanwhile
        if folder.exists() and not folder.is_dir():  # rmtree leaves a file, and the move fails
            raise LMTrainError(
                f"data.cache_dir={str(cache_dir)!r} holds a file where this token cache goes "
                f"({folder.name}): remove it, or pass another data.cache_dir"
            )
        if folder.exists():
            problem = find_problem(folder)
            if problem is None:
                log.info("Token cache %s was built by another process: using it", folder)
                return folder
            log.warning(
                "Token cache %s is damaged (%s): removing and rebuilding it", folder, problem
            )
            shutil.rmtree(folder, ignore_errors=True)
        _remove_leftovers(cache_dir, key)
        tmp = cache_dir / f"{key}.tmp-{socket.gethostname()}-{os.getpid()}"
        try:
            write(tmp, source, tokenizer, key, workers or default_workers(), chunk_mb)
            _move_into_place(tmp, folder)
        except OSError as err:
            if err.errno not in NO_SPACE:
                raise
            size = source.size_hint()
            need = f" (up to ~{2 * size / MB:,.0f} MB for this corpus)" if size else ""
            raise LMTrainError(
                f"could not write the token cache {tmp} ({os.strerror(err.errno)}): free space "
                f"in {cache_dir}, or set data.cache_dir=<a folder on a disk with room>{need}"
            ) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


# The build locks this process holds or waits for (its threads'): never opened for a look
# (`locks.held_elsewhere`), as closing any descriptor of a file drops the process's lock on it.
_own_locks: set[Path] = set()


def _remove_leftovers(cache_dir: Path, key: str) -> None:
    """Remove this host's interrupted builds, holding `key`'s lock: this key's (nobody writes
    one now); another key's once nobody holds its lock (a kill drops it) and its pid is gone. A
    pid alone says nothing across PID namespaces (containers of one host name sharing the
    folder: Docker's --net=host, Kubernetes' hostNetwork), a lock is seen from all of them.
    Other hosts' builds are left alone, in case the file system does not share locks."""
    for leftover in cache_dir.glob(f"*.tmp-{socket.gethostname()}-*"):
        other, pid = leftover.name.partition(".")[0], leftover.name.rsplit("-", 1)[-1]
        dead = (
            leftover.is_dir()
            and pid.isascii()
            and pid.isdigit()
            and not locks.alive(int(pid))  # a live or reused pid's stay, as before
            and cache_dir / f"{other}.lock" not in _own_locks
            and not locks.held_elsewhere(cache_dir / f"{other}.lock")
        )
        if other == key or dead:
            log.warning("Removing %s, left by an interrupted build", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def find(cache_dir: str | os.PathLike[str], source: Source, tokenizer: TokenizerSettings) -> Path:
    """The complete cache folder for this source and tokenizer, which `build_or_load` made."""
    folder = Path(cache_dir) / fingerprint(source, tokenizer)
    problem = find_problem(folder) if folder.exists() else "it does not exist"
    if problem is not None:
        raise RuntimeError(
            f"the token cache {folder} cannot be used ({problem}): build it first with the data "
            "module's prepare_data()"
        )
    return folder


def _move_into_place(tmp: Path, folder: Path) -> None:
    """Rename a finished folder into place; if another host got there first, keep theirs."""
    try:
        os.replace(tmp, folder)
    except OSError as err:
        if err.errno in NO_SPACE:
            raise
        if folder.is_dir() and not folder.is_symlink() and find_problem(folder) is None:
            log.info("Token cache %s was built concurrently by another host: using it", folder)
            return
        raise LMTrainError(
            f"the new token cache could not be moved into place as {folder} ({err.strerror}): "
            f"remove {folder}, or pass another data.cache_dir"
        ) from None


def _refuse_link(folder: Path) -> None:
    """One line for a cache folder that is a symbolic link, which the rebuild of a missing or
    damaged cache would remove or write through (os.replace fails on it, with a traceback)."""
    if folder.is_symlink():
        raise LMTrainError(
            f"the token cache {folder} is a symbolic link to {os.readlink(folder)}, which is "
            f"missing or not a complete cache and is never rebuilt or removed through a link: "
            f"remove the link ({folder}), or pass another data.cache_dir"
        )


def _unwritable(cache_dir: Path, what: str, err: OSError) -> LMTrainError:
    """The one line for a cache_dir this process cannot write (read-only, not ours, a file)."""
    where = f": {err.filename}" if err.filename else ""
    return LMTrainError(
        f"data.cache_dir={cache_dir} cannot be {what} ({err.strerror}{where}): pass a writable "
        "data.cache_dir"
    )


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the build lock `path` (`lmtrain.utils.locks`: dropped by the kernel when its holder
    dies), waiting for another builder if there is one. The file stays (removing it would let a
    waiting process and a new one lock two different files). Only a missing or damaged cache
    takes the lock, so a read-only cache_dir that holds a complete cache still serves it."""
    _own_locks.add(path)
    try:
        try:
            release = locks.acquire(path)
        except locks.LockHeld:
            log.info("Waiting for another process to finish building %s", path.with_suffix(""))
            release = locks.acquire(path, wait=True)
    except BaseException as err:
        _own_locks.discard(path)
        if isinstance(err, OSError):  # the lock file cannot be created or opened for writing
            raise _unwritable(path.parent, "written", err) from None
        raise
    try:
        yield
    finally:
        release()
        _own_locks.discard(path)


def write(
    folder: Path,
    source: Source,
    settings: TokenizerSettings,
    key: str,
    workers: int,
    chunk_mb: float,
) -> None:
    """Train or load the tokenizer, encode both splits and write everything into `folder`."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    log.info("Building token cache %s from %s", folder, source.describe())
    sample = _Counted(settings.training_text(source))
    tokenizer = settings.build(sample)
    save_tokenizer(tokenizer, folder / "tokenizer")
    dtype = token_dtype(len(tokenizer))
    size = source.size_hint()
    chunk_bytes = max(1, int(chunk_mb * MB))
    if size is not None:  # no point forking more workers than there are chunks
        workers = max(1, min(workers, size // chunk_bytes))
    with counting_forced_cuts() as forced:  # this pass's documents, not the tokenizer sample's
        stats = encode_corpus(
            source.documents(),
            tokenizer.backend_tokenizer.to_str(),
            tokenizer.eos_token_id,
            dtype,
            {split: folder / f"{split}.bin" for split in SPLITS},
            workers=workers,
            chunk_bytes=chunk_bytes,
            total_bytes=size,
        )
    warn_forced_cuts(forced.documents, source, tokenizer.backend_tokenizer)
    total_mb = sum(stats.bytes.values()) / MB
    meta = {
        "format_version": FORMAT_VERSION,
        "fingerprint": key,
        "dtype": dtype.name,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "tokens": stats.tokens,
        "documents": stats.documents,
        "text_bytes": stats.bytes,
        "tokenizer_trained_on": sample.summary(),
        "source": source.describe(),
        "tokenizer": asdict(settings),
        "prepare": {"workers": stats.workers, "seconds": round(stats.seconds, 3)},
        "checksums": file_checksums({split: folder / f"{split}.bin" for split in SPLITS}),
        "tokenizer_checksums": folder_checksums(folder / "tokenizer"),
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info(
        "Tokenized %.1f MB into %d train and %d val tokens (vocab %d) in %.1fs (%.1f MB/s, %d "
        "workers)",
        total_mb,
        stats.tokens["train"],
        stats.tokens["val"],
        len(tokenizer),
        stats.seconds,
        total_mb / max(stats.seconds, 1e-9),
        stats.workers,
    )


class _Counted:
    """An iterator of texts that counts what its consumer took, for meta.json."""

    def __init__(self, texts: Iterator[str]) -> None:
        self.texts = texts
        self.count = 0
        self.bytes = 0
        self.used = False

    def summary(self) -> dict[str, int] | None:
        return {"pieces": self.count, "bytes": self.bytes} if self.used else None

    def __iter__(self) -> Iterator[str]:
        self.used = True
        for text in self.texts:
            self.count += 1
            self.bytes += utf8_len(text)
            yield text
