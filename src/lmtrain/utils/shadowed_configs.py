"""A config of one's own that Hydra never reads, because the project ships one of that name.

The usual way to adapt a recipe is to copy a shipped config into one's own folder (a
`hydra.searchpath` entry, or `--config-dir`) and edit it. Hydra takes the first folder of its
search path that holds `<group>/<name>.yaml`, and the project's `configs/` (the primary config
folder) comes before any of those: an edited `model/llama_tiny.yaml` there was passed over and
the shipped model trained, exit 0, without a word (red team ext29). Each option the run selects
(`hydra.runtime.choices`) that a folder of one's own holds too, behind another, gets one warning
naming both files. `local` is left out: its configs are the machine's own (configs/local/ is
ignored by git), not the project's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only

from lmtrain.utils.local_configs import GROUP as LOCAL_GROUP
from lmtrain.utils.local_configs import config_sources, select

log = logging.getLogger(__name__)

# The search path's providers for folders of one's own: `--config-dir` and `hydra.searchpath`
# (given on the command line or in the primary config).
OWN_PROVIDERS = ("command-line", "hydra.searchpath")
# The primary config folder's provider: the project's configs/.
MAIN_PROVIDER = "main"
# The messages already logged by this process (a resumed run checks its config again).
_warned: set[str] = set()


def warn_shadowed_configs(hydra: Any) -> None:
    """Log one warning (rank 0, once a process) for each config the run selects that a folder of
    one's own holds behind an earlier folder of the search path (`hydra`: the run's Hydra node;
    None outside Hydra, which warns about nothing)."""
    if rank_zero_only.rank > 0:
        return
    for message in shadowed_configs(hydra):
        if message not in _warned:
            _warned.add(message)
            log.warning(message)


def shadowed_configs(hydra: Any) -> list[str]:
    """The warnings for `hydra`'s selected options whose file in a folder of one's own is passed
    over for the same name in an earlier folder of the search path."""
    entries = list(select(hydra, "runtime", "config_sources") or ())
    choices = select(hydra, "runtime", "choices")
    if not entries or not isinstance(choices, Mapping):
        return []
    sources = list(zip(entries, config_sources(hydra), strict=True))
    messages = []
    for group, option in selected(choices):
        name = f"{group}/{option}"
        holders = [(entry, source) for entry, source in sources if holds(source, name)]
        for entry, _ in holders[1:]:
            if same_folder(entry, holders[0][0]):  # `--config-dir configs`: the same file
                continue
            if str(entry["provider"]).startswith(OWN_PROVIDERS):
                messages.append(shadow_message(group, option, entry, holders[0][0]))
    return messages


def selected(choices: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """Each (group, option) of Hydra's runtime choices (a group may take a list of options)."""
    for group, value in choices.items():
        if str(group) == LOCAL_GROUP or value is None:
            continue
        for option in value if isinstance(value, list | tuple) else [value]:
            if isinstance(option, str) and option:
                yield str(group), option


def holds(source: Any, name: str) -> bool:
    """Whether `source` (a config source, None when unknown) holds the config `name`."""
    try:
        return source is not None and bool(source.is_config(name))
    except Exception:  # a source that cannot be read: Hydra names it, if it matters
        return False


def shadow_message(
    group: str, option: str, own: Mapping[str, Any], first: Mapping[str, Any]
) -> str:
    """The warning for `group/option` in the folder `own`, passed over for the one in `first`."""
    name = f"{group}/{option}.yaml"
    winner = (
        f"the project's configs/{name}"
        if first["provider"] == MAIN_PROVIDER
        else f"{source_path(first)}/{name} ({first['provider']})"
    )
    whose = "the project's" if first["provider"] == MAIN_PROVIDER else "that one"
    return (
        f"{source_path(own)}/{name} has the name of {winner}, which Hydra finds first: "
        f"{group}={option} is {whose}, not yours; give yours a name of its own "
        f"({group}/my_{option}.yaml, {group}=my_{option})"
    )


def source_path(entry: Mapping[str, Any]) -> str:
    """A search path entry as the user wrote it: a folder for `file`, else `<schema>://path`."""
    schema, path = str(entry["schema"]), str(entry["path"])
    return path if schema == "file" else f"{schema}://{path}"


def same_folder(entry: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """Whether two search path entries are one folder (a path to configs/ itself, typed again)."""
    if entry["schema"] != "file" or other["schema"] != "file":
        return False
    return Path(str(entry["path"])).resolve() == Path(str(other["path"])).resolve()
