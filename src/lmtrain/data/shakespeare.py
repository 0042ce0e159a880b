"""Tiny Shakespeare (1 MB), nanoGPT's char-level baseline: a local copy or a one-time download,
verified against a fixed checksum."""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

from lmtrain.data.corpus import check_val_fraction
from lmtrain.data.sources import FileSource, TextFilesSource
from lmtrain.errors import LMTrainError

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "TINY_SHAKESPEARE_SHA256",
    "TINY_SHAKESPEARE_URL",
    "ShakespeareSource",
]

log = logging.getLogger(__name__)

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOAD_TIMEOUT_S = 60.0


class ShakespeareSource(FileSource):
    """Tiny Shakespeare (1 MB), nanoGPT's char-level baseline: a local copy or a one-time download.

    `url` and `timeout_s` exist for mirrors and offline tests; the checksum is fixed, so whatever
    is downloaded must be the real file, and the fingerprint can use it without downloading.
    """

    def __init__(
        self,
        path: str | None = None,
        val_fraction: float = 0.1,
        download_dir: str = "data/shakespeare",
        url: str = TINY_SHAKESPEARE_URL,
        timeout_s: float = DOWNLOAD_TIMEOUT_S,
    ) -> None:
        self.path = None if path is None else str(path)
        self.val_fraction = check_val_fraction(val_fraction)
        self.download_dir = str(download_dir)
        self.url = url
        self.timeout_s = timeout_s

    def find_files(self) -> tuple[list[Path], Path]:
        if self.path is not None:  # a local copy is found as text_files finds it
            files = TextFilesSource(self.path, self.val_fraction)
            files.leave_out(self._left_out)  # the cache and run folders: left out, logged as info
            return files.find_files()
        dest = self.download()
        return [dest], dest.parent

    def identity(self) -> dict[str, Any]:
        if self.path is None:
            return {"sha256": TINY_SHAKESPEARE_SHA256}
        return super().identity()

    def size_hint(self) -> int | None:
        return None if self.path is None else super().size_hint()

    def download(self) -> Path:
        """Fetch input.txt once, verified, written under a temporary name and then renamed."""
        dest = Path(self.download_dir) / "input.txt"
        if dest.is_file() and _sha256(dest.read_bytes()) == TINY_SHAKESPEARE_SHA256:
            return dest
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise LMTrainError(
                f"{self.typed_as}.download_dir={self.download_dir!r} cannot be created "
                f"({err.strerror or err}): pass a folder you can write to, or "
                f"{self.typed_as}.path=<local copy of input.txt>"
            ) from None
        log.info("Downloading Tiny Shakespeare from %s to %s", self.url, dest)
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as response:
                data = response.read()
        except (OSError, ValueError) as err:
            raise LMTrainError(
                f"downloading Tiny Shakespeare from {self.url} failed ({err}): set "
                f"{self.typed_as}.path=<local copy of input.txt>"
            ) from None
        if _sha256(data) != TINY_SHAKESPEARE_SHA256:
            raise LMTrainError(
                f"the file downloaded from {self.url} has the wrong sha256 (not kept): set "
                f"{self.typed_as}.path=<local copy of input.txt>"
            )
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, dest)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise LMTrainError(
                f"writing Tiny Shakespeare to {dest} failed ({err.strerror or err}): pass a "
                f"{self.typed_as}.download_dir you can write to, or "
                f"{self.typed_as}.path=<local copy>"
            ) from None
        return dest

    def settings(self) -> dict[str, Any]:
        return {"path": self.path, "val_fraction": self.val_fraction, "url": self.url}

    def describe(self) -> str:
        where = self.path if self.path is not None else self.url
        return f"Tiny Shakespeare from {where} (val_fraction={self.val_fraction})"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
