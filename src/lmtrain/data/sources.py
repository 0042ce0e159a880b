"""Corpus sources: where the text comes from and how it splits into train and val.

Hydra instantiates one source from `data.source` (`_target_`); the datamodule then calls
`load_splits()` once and fingerprints the text it returns, so a source only has to be
deterministic. Each source keeps its settings as constructor arguments and reports the ones that
shape the corpus in `settings()`, which go into the token cache's fingerprint.

Splits are deterministic without a seed: a corpus of many files splits by file with a hash of the
file's relative path (a file never moves between train and val when others are added), and a
single file splits by characters the way nanoGPT does (the tail is val).
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import sysconfig
import urllib.request
import zlib
from pathlib import Path

from lmtrain.errors import LMTrainError

log = logging.getLogger(__name__)

Splits = tuple[list[str], list[str]]

STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def _check_val_fraction(val_fraction: float) -> float:
    """Reject fractions that would leave train or val empty by construction."""
    if not 0.0 < val_fraction < 1.0:
        raise LMTrainError(
            f"data.source.val_fraction={val_fraction!r} is out of range: pass a number strictly "
            "between 0 and 1, e.g. 0.1"
        )
    return float(val_fraction)


def is_val_file(relative_path: str, val_fraction: float) -> bool:
    """Whether a file belongs to val: a stable hash of its relative path, not a random draw."""
    return zlib.crc32(relative_path.encode("utf-8")) % 10_000 < val_fraction * 10_000


def split_text(text: str, val_fraction: float) -> Splits:
    """nanoGPT's split of one document: the first (1 - val_fraction) of its characters train."""
    cut = int(len(text) * (1.0 - val_fraction))
    return [text[:cut]], [text[cut:]]


def split_files(files: list[Path], base: Path, val_fraction: float) -> Splits:
    """Split files by path hash; move one file over if that leaves a side empty.

    With a handful of files the hash can put all of them on one side, which would fail later with
    a less helpful "split too small" error, so the last file goes to val and the first to train.
    """
    val_mask = [is_val_file(f.relative_to(base).as_posix(), val_fraction) for f in files]
    if len(files) > 1 and not any(val_mask):
        val_mask[-1] = True
    if len(files) > 1 and all(val_mask):
        val_mask[0] = False
    texts = [_read_utf8(f) for f in files]
    train = [t for t, is_val in zip(texts, val_mask, strict=True) if not is_val]
    val = [t for t, is_val in zip(texts, val_mask, strict=True) if is_val]
    return train, val


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LMTrainError(
            f"{str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start}): convert it to "
            "UTF-8 or point data.source.path at text files only"
        ) from None


class PythonStdlibSource:
    """The `.py` files of the running interpreter's standard library: a corpus with no download.

    About 12 MB of code is enough to see a small model learn; tests are excluded because they are
    repetitive and would leak near-duplicates between train and val.
    """

    def __init__(self, val_fraction: float = 0.05) -> None:
        self.val_fraction = _check_val_fraction(val_fraction)
        self.root = Path(sysconfig.get_paths()["stdlib"])

    def files(self) -> list[Path]:
        """The sorted corpus files, so the document order (and the fingerprint) is stable."""
        return sorted(
            p
            for p in self.root.rglob("*.py")
            if p.is_file() and not STDLIB_EXCLUDED_DIRS & set(p.relative_to(self.root).parts[:-1])
        )

    def load_splits(self) -> Splits:
        return split_files(self.files(), self.root, self.val_fraction)

    def settings(self) -> dict[str, object]:
        return {"val_fraction": self.val_fraction}

    def describe(self) -> str:
        return f"Python stdlib .py files under {self.root} (val_fraction={self.val_fraction})"


class TextFilesSource:
    """Your own UTF-8 text: one file, every file under a folder, or a glob."""

    def __init__(self, path: str, val_fraction: float = 0.1) -> None:
        self.path = str(path)
        self.val_fraction = _check_val_fraction(val_fraction)

    def files(self) -> tuple[list[Path], Path]:
        """The matched files, sorted, and the folder that their relative paths start from."""
        path = Path(self.path).expanduser()
        if path.is_file():
            return [path], path.parent
        if path.is_dir():
            return sorted(p for p in path.rglob("*") if p.is_file()), path
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        base = Path(os.path.commonpath([p.parent for p in files])) if files else path.parent
        return files, base

    def load_splits(self) -> Splits:
        files, base = self.files()
        if not files:
            raise LMTrainError(
                f"data.source.path={self.path!r} matches no file: pass an existing file, folder "
                "or glob"
            )
        files = [f for f in files if f.stat().st_size > 0]
        if not files:
            raise LMTrainError(
                f"data.source.path={self.path!r} matches only empty files: pass files with text"
            )
        if len(files) == 1:
            return split_text(_read_utf8(files[0]), self.val_fraction)
        return split_files(files, base, self.val_fraction)

    def settings(self) -> dict[str, object]:
        return {"path": self.path, "val_fraction": self.val_fraction}

    def describe(self) -> str:
        return f"text files {self.path!r} (val_fraction={self.val_fraction})"


class ShakespeareSource:
    """Tiny Shakespeare (1 MB), nanoGPT's char-level baseline: a local copy or a one-time download.

    `url` and `timeout_s` exist for mirrors and offline tests; the checksum is fixed, so whatever
    is downloaded must be the real file.
    """

    def __init__(
        self,
        path: str | None = None,
        val_fraction: float = 0.1,
        download_dir: str = "data/shakespeare",
        url: str = TINY_SHAKESPEARE_URL,
        timeout_s: float = 60.0,
    ) -> None:
        self.path = None if path is None else str(path)
        self.val_fraction = _check_val_fraction(val_fraction)
        self.download_dir = str(download_dir)
        self.url = url
        self.timeout_s = timeout_s

    def load_splits(self) -> Splits:
        if self.path is not None:
            return TextFilesSource(self.path, self.val_fraction).load_splits()
        return split_text(_read_utf8(self.download()), self.val_fraction)

    def download(self) -> Path:
        """Fetch input.txt once, verified, written under a temporary name and then renamed."""
        dest = Path(self.download_dir) / "input.txt"
        if dest.is_file() and _sha256(dest.read_bytes()) == TINY_SHAKESPEARE_SHA256:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        log.info("Downloading Tiny Shakespeare from %s to %s", self.url, dest)
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                data = response.read()
        except (OSError, ValueError) as err:
            raise LMTrainError(
                f"downloading Tiny Shakespeare from {self.url} failed ({err}): set "
                "data.source.path=<local copy of input.txt>"
            ) from None
        if _sha256(data) != TINY_SHAKESPEARE_SHA256:
            raise LMTrainError(
                f"the file downloaded from {self.url} has the wrong sha256 (not kept): set "
                "data.source.path=<local copy of input.txt>"
            )
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        return dest

    def settings(self) -> dict[str, object]:
        return {"path": self.path, "val_fraction": self.val_fraction, "url": self.url}

    def describe(self) -> str:
        where = self.path if self.path is not None else self.url
        return f"Tiny Shakespeare from {where} (val_fraction={self.val_fraction})"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
