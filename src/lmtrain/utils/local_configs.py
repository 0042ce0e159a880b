"""`local=<name>` that names no config.

Each entry point's defaults end with `- optional local: default`: a machine's own settings in
`configs/local/default.yaml` (ignored by git), applied when the file is there. Hydra's
`optional` drops a missing option without a word, one typed on the command line too: with only
`local/mybox.yaml`, `local=mybx` ran without the machine's settings and exited 0 (its hydra.yaml
said `local: mybx`). A `local=` choice other than the optional default, or one typed, must name a
config in the `local/` group of some folder of the config search path (`configs/`, a
`hydra.searchpath` entry, `--config-dir`), and is refused otherwise, naming the ones there are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType

from lmtrain.errors import LMTrainError
from lmtrain.utils.unresolved_folder import as_typed

GROUP = "local"
# The option the defaults lists name, optional: its absence is the usual case.
OPTIONAL_DEFAULT = "default"


def hydra_node(cfg: Mapping[str, Any] | None = None) -> Any:
    """The Hydra node of this run: `cfg.hydra` (a config composed with it, or the one Hydra
    callbacks get) or the running job's; None outside Hydra."""
    if cfg is not None and isinstance(cfg.get("hydra"), Mapping):
        return cfg["hydra"]
    return HydraConfig.get() if HydraConfig.initialized() else None


def typed_choice(hydra: Any) -> bool:
    """Whether the command line picks the `local` group (`local=x`, `+local=x`, `++local=x`).
    The overrides are read as typed: iterating Hydra's record resolved each one's `${...}`, and
    one that fails (`lr=${oc.env:UNSET}`) raised here, before the run folder was noted."""
    overrides = as_typed(select(hydra, "overrides", "task"))
    return any(o.lstrip("+").partition("=")[0] == GROUP for o in overrides)


def missing_local(hydra: Any) -> str | None:
    """Why this run's `local` choice names no config, or None (it does, or it is the optional
    default left alone, or there is no Hydra record to read)."""
    choice = select(hydra, "runtime", "choices", GROUP)
    if not isinstance(choice, str) or (choice == OPTIONAL_DEFAULT and not typed_choice(hydra)):
        return None
    sources, found = config_sources(hydra), []
    if not sources:  # no record of the search path (a config composed in Python)
        return None
    for source in sources:
        if source is None:  # a source Hydra reads and this cannot: its options are unknown
            return None
        try:
            if source.is_config(f"{GROUP}/{choice}"):
                return None
            options = source.list(GROUP, ObjectType.CONFIG) if source.is_group(GROUP) else []
        except Exception:  # a source that cannot be listed: leave the choice to Hydra
            return None
        if options:
            found.append(f"{', '.join(sorted(options))} in {source.path}")
    holds = f"holds {'; '.join(found)}: pass one of those, or" if found else "holds none:"
    return (
        f"{GROUP}={choice}: no {GROUP}/{choice}.yaml in the config search path, whose {GROUP}/ "
        f"{holds} put {choice}.yaml in configs/{GROUP}/ or in {GROUP}/ under a folder of "
        f"hydra.searchpath (or drop {GROUP}=)"
    )


def config_sources(hydra: Any) -> list[Any]:
    """The config sources of the run's search path (`hydra.runtime.config_sources`), as Hydra
    reads them; None for one whose kind is not known here."""
    return [
        config_source(str(entry["schema"]), str(entry["path"]), str(entry["provider"]))
        for entry in select(hydra, "runtime", "config_sources") or ()
    ]


def config_source(schema: str, path: str, provider: str) -> Any:
    """Hydra's config source of kind `schema` (file, pkg) for `path`; None for a kind not known
    here or a path it cannot open."""
    from hydra._internal.sources_registry import SourcesRegistry  # Hydra's own registry

    try:
        return SourcesRegistry.instance().resolve(schema)(provider, f"{schema}://{path}")
    except Exception:
        return None


def select(node: Any, *keys: str) -> Any:
    for key in keys:
        if node is None:
            return None
        try:
            node = node.get(key) if isinstance(node, Mapping) else getattr(node, key, None)
        except Exception:  # an unset value (`???`) of Hydra's record
            return None
    return node


def refuse_missing_local(cfg: Mapping[str, Any] | None = None) -> None:
    """Raise LMTrainError when the run's `local=` choice names no config (see `missing_local`):
    for a Hydra callback's `on_run_start(config)`, before Hydra writes the run folder."""
    problem = missing_local(hydra_node(cfg))
    if problem:
        raise LMTrainError(problem)
