"""Whether a path lies inside a folder, local or remote: what a checkpoint callback may remove.

Apart from `lmtrain.lightning_compat`, which uses it, since it touches no Lightning API.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from fsspec.utils import get_protocol


def lies_in(path: str, folder: str) -> bool:
    """Whether `path` lies below `folder`: resolved locally (links, `..`), normalized remotely."""
    if get_protocol(path) != "file" or get_protocol(folder) != "file":
        path, folder = posixpath.normpath(path), posixpath.normpath(folder)
        return path.startswith(folder.rstrip("/") + "/")
    path, folder = path.removeprefix("file://"), folder.removeprefix("file://")
    return Path(folder).resolve() in Path(path).resolve().parents
