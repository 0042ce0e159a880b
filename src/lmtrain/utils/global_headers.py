"""An experiment (or debug, hparams_search, local) config without `# @package _global_` whose
defaults override a group, refused in one line before Hydra composes.

Such a config applies at the top only with that first line. Without it, a config of keys alone
composes (its keys land under `experiment:`, which `lmtrain.utils.config_keys` refuses, naming
them), but `defaults: [override /model: llama_tiny]`, which every real experiment has, makes
Hydra stop first with `In 'experiment/e5': Could not override 'model@experiment.model'. Did you
mean to override model?`, which says nothing of the header (red team ext29). Hydra has no hook
before it composes, so the entry points ask here (through `lmtrain.utils.group_overrides`): the
option typed for each such group (and `local`'s optional default) is looked up as Hydra looks it
up, in the project's configs/, then `--config-dir`, then the command line's `hydra.searchpath`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lmtrain.utils.config_keys import GLOBAL_GROUPS
from lmtrain.utils.hydra_flags import hydra_args
from lmtrain.utils.local_configs import GROUP as LOCAL_GROUP
from lmtrain.utils.local_configs import OPTIONAL_DEFAULT, config_source
from lmtrain.utils.task import fail

HEADER = "# @package _global_"


def refuse_headerless_globals(argv: Sequence[str], configs: Path) -> None:
    """One `error:` line and exit 1 when a config the command line selects for a group that
    applies at the top lacks the `_global_` header and overrides a group in its defaults
    (`configs`: the project's config folder). Anything that cannot be read is left to Hydra."""
    parsed = parse_command(argv)
    if parsed is None:
        return
    config_dir, overrides = parsed
    sources = search_sources(configs, config_dir, overrides)
    for group, option in global_choices(overrides):
        name = f"{group}/{option}"
        found = next(((s, r) for s in sources if (r := loaded(s, name)) is not None), None)
        if found is None:
            continue  # not there: Hydra's own error names it
        source, result = found
        header = result.header.get("package") if isinstance(result.header, Mapping) else None
        overridden = overriding_defaults(result.config)
        if header is None and overridden:
            where = source.path.removeprefix("file://")
            target = f"{group}.{overridden[0].lstrip('/').replace('/', '.')}"
            fail(
                f"{group}={option}: {where}/{name}.yaml has no `{HEADER}` first line, so Hydra "
                f"takes its `override {overridden[0]}` for an override of {target} and stops: "
                f"add `{HEADER}` as the file's first line"
            )


def parse_command(argv: Sequence[str]) -> tuple[str | None, list[Any]] | None:
    """`--config-dir` and the parsed overrides of `argv`, read as Hydra reads them; None when
    Hydra would refuse them (its own message says why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    args = hydra_args(argv)
    if args is None:
        return None
    try:
        overrides = OverridesParser.create().parse_overrides(list(args.overrides or ()))
    except Exception:
        return None
    return args.config_dir, overrides


def search_sources(configs: Path, config_dir: str | None, overrides: list[Any]) -> list[Any]:
    """The config sources Hydra searches, in its order: configs/, `--config-dir`, then the
    command line's `hydra.searchpath` entries (`pkg://`, `file://`)."""
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the kinds of config source (file://, pkg://)
    paths = [f"file://{configs}"]
    if config_dir:
        paths.append(f"file://{Path(config_dir).absolute()}")
    for override in overrides:
        if override.get_key_element() == "hydra.searchpath" and not override.is_delete():
            value = override.value()
            paths += [str(v) for v in value] if isinstance(value, list) else []
    sources = []
    for path in paths:
        scheme, _, rest = path.partition("://") if "://" in path else ("file", "", path)
        source = config_source(scheme, rest, "lmtrain")  # no scheme: a folder, as Hydra reads it
        if source is not None:  # None: a path Hydra cannot read, its own warning
            sources.append(source)
    return sources


def global_choices(overrides: list[Any]) -> Iterator[tuple[str, str]]:
    """Each option typed for a group that applies at the top (every option of a sweep), and
    `local`'s optional default when no `local=` is typed."""
    typed = set()
    for override in overrides:
        group = override.key_or_group
        if group not in GLOBAL_GROUPS or override.is_delete() or override.package is not None:
            continue
        typed.add(group)
        try:
            values = (
                list(override.sweep_string_iterator())
                if override.is_sweep_override()
                else [override.value()]
            )
        except Exception:  # a sweep that cannot be listed (a range of strings): Hydra's to say
            continue
        yield from ((group, value) for value in values if isinstance(value, str))
    if LOCAL_GROUP not in typed:
        yield LOCAL_GROUP, OPTIONAL_DEFAULT


def loaded(source: Any, name: str) -> Any:
    """Hydra's `ConfigResult` (the config and its header) for `name` in `source`, or None."""
    try:
        return source.load_config(name) if source.is_config(name) else None
    except Exception:  # an unreadable file: Hydra's error names it
        return None


def overriding_defaults(config: Any) -> list[str]:
    """The groups a config's defaults list overrides (`override /model: x` -> `/model`)."""
    defaults = config.get("defaults") if isinstance(config, Mapping) else None
    found = []
    for entry in (
        defaults if isinstance(defaults, Sequence) and not isinstance(defaults, str) else ()
    ):
        for key in entry if isinstance(entry, Mapping) else ():
            if str(key).startswith("override "):
                found.append(str(key).removeprefix("override ").strip())
    return found
