"""A corpus source read from a model's stored run config, with this machine's folders and URLs.

A checkpoint's `lmtrain.run_config` and an export's `lmtrain.json` say which text the model was
trained on, and also where the training machine kept its downloads and caches and where it fetched
them from. Those are data from another machine (or from whoever edited the file), not settings for
this one: evaluating a shared export must not create the trainer's folder tree here, download into
it, or fetch from a URL the file names. So the settings that say *where*, not *which text*, are
replaced by what the project's configs set under this command's `paths.data_dir`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from hydra.utils import get_class

from lmtrain.data.hf_dataset import HFDatasetSource
from lmtrain.data.shakespeare import (
    DOWNLOAD_TIMEOUT_S,
    TINY_SHAKESPEARE_SHA256,
    TINY_SHAKESPEARE_URL,
    ShakespeareSource,
)

__all__ = ["MACHINE_LOAD_KWARGS", "this_machine_source"]

log = logging.getLogger(__name__)

# `datasets.load_dataset` keywords that say where its files go, where they come from and how the
# download is done on one machine, not which rows the dataset holds.
MACHINE_LOAD_KWARGS = frozenset(
    {
        "cache_dir",
        "download_config",
        "download_mode",
        "keep_in_memory",
        "num_proc",
        "storage_options",
        "token",
    }
)


def shakespeare_settings(stored: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """Where configs/data/shakespeare_char.yaml keeps the download under `data_dir`, and the
    file's one URL (its checksum is fixed: a mirror is a setting to type, not to inherit)."""
    folder = str(Path(data_dir) / "shakespeare")
    # The verified file, already downloaded where the run config says: read there, not fetched
    # again (its sha256 is Tiny Shakespeare's, so it is that text whoever named the folder).
    stored_dir = stored.get("download_dir")
    if isinstance(stored_dir, str) and holds_tiny_shakespeare(Path(stored_dir) / "input.txt"):
        folder = stored_dir
    return {"download_dir": folder, "url": TINY_SHAKESPEARE_URL, "timeout_s": DOWNLOAD_TIMEOUT_S}


def hf_dataset_settings(stored: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """configs/data/hf_dataset.yaml's `cache_dir: null` (this machine's HF_DATASETS_CACHE), and
    `load_kwargs` without the keywords that name this machine's files, hosts or credentials."""
    del data_dir  # datasets' own cache, as the project's config leaves it
    settings: dict[str, Any] = {"cache_dir": None}
    load_kwargs = stored.get("load_kwargs")
    if isinstance(load_kwargs, Mapping):  # anything else is refused by the source, as typed
        kept = {k: v for k, v in load_kwargs.items() if k not in MACHINE_LOAD_KWARGS}
        settings["load_kwargs"] = kept or None
    return settings


def holds_tiny_shakespeare(file: Path) -> bool:
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest() == TINY_SHAKESPEARE_SHA256
    except OSError:  # absent, a folder, unreadable
        return False


# Each source class whose settings name this machine's folders or URLs, and their replacements.
MACHINE_SETTINGS: dict[type, Callable[[Mapping[str, Any], Path], dict[str, Any]]] = {
    ShakespeareSource: shakespeare_settings,
    HFDatasetSource: hf_dataset_settings,
}


def this_machine_source(source: Mapping[str, Any], data_dir: Path) -> dict[str, Any]:
    """`source` (a stored `data.source`, plain, its `_target_` already checked) with its folder
    and URL settings replaced by this machine's under `data_dir`; each change is logged."""
    try:
        source_class = get_class(str(source.get("_target_")))
    except (HydraException, ImportError, ValueError):  # instantiating it says why, in one line
        return dict(source)
    replace = next(
        (f for cls, f in MACHINE_SETTINGS.items() if issubclass(source_class, cls)), None
    )
    if replace is None:
        return dict(source)
    ours = replace(source, data_dir)
    changed = [
        f"{key}={source[key]!r}" for key in ours if key in source and source[key] != ours[key]
    ]
    if changed:
        log.info(
            "Not using the stored run config's data.source %s (where the training machine kept "
            "and fetched its files): using this command's %s",
            ", ".join(changed),
            ", ".join(f"{key}={ours[key]!r}" for key in ours if key in source),
        )
    return {**source, **ours}
