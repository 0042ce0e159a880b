"""What a config read from disk may name before lmtrain builds anything from it.

A run folder's `.hydra/config.yaml` (`resume=`), a checkpoint's `lmtrain.run_config` and an
export's `lmtrain.json` are copied, shared and edited by hand, so they are data, not code: a
`_target_` in them is only instantiated when the project's own configs name it (every YAML file of
the config search path: `configs/`, `configs/local/`, any `hydra.searchpath` folder) or the
user typed it on this command line; positional `_args_` only where those do so too. For
`resume=`, the folders the resumed run writes into (`dirpath`, `save_dir`, `export_dir`,
`default_root_dir`, `dir`, `paths.output_dir`) must be what the project's configs set there or lie
inside the run folder, and the names joined onto them (a checkpoint's `filename`, a logger's
`name`, `version`, `sub_dir`) must not climb out (`..`) or be absolute: a saved config must not
point the run's checkpoints at another run's last.ckpt.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from lmtrain.errors import LMTrainError

# lmtrain's own configs (src/lmtrain/configs: a link to the project's configs/ in a checkout).
PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Keys of an instantiated node that name a folder the run writes into.
WRITE_KEYS = ("dirpath", "save_dir", "export_dir", "default_root_dir", "dir")
# Keys of such a node whose value is joined onto that folder (a checkpoint's file name, a
# logger's subfolders): a `..` or an absolute path in one writes outside it.
PATH_PART_KEYS = ("filename", "name", "version", "sub_dir")
# A field of a checkpoint `filename` up to its format spec, as Lightning finds them: it formats
# `{0[<field>]}`, so a `]` in one opens item and attribute access.
NAME_FIELD = re.compile(r"\{([^:}]*)")
SHOWN = 3  # offending keys named in the one-line refusal
MAX_DEPTH = 64  # levels of a stored config walked; a deeper node is refused, not skipped


@dataclass(frozen=True)
class Allowed:
    """The targets a stored config may name, those that may take `_args_`, and each
    (target, write key)'s values as the project's configs write them (uninterpolated)."""

    targets: frozenset[str]
    with_args: frozenset[str]
    write_values: frozenset[tuple[str, str, str]]


def config_dirs(sources: Iterable[Any] | None = None) -> list[Path]:
    """The config folders of the search path: `sources` (`hydra.runtime.config_sources`), else
    the running Hydra command's, and always lmtrain's own configs. Hydra's own package (its
    launchers and sweepers) is left out."""
    if sources is None and HydraConfig.initialized():
        sources = HydraConfig.get().runtime.config_sources
    dirs = [PACKAGE_CONFIGS]
    for source in sources or []:
        schema, path = str(source.schema), str(source.path)
        if schema == "file":
            dirs.append(Path(path))
        elif schema == "pkg" and str(source.provider) != "hydra":
            try:
                dirs.append(Path(str(importlib.resources.files(path.replace("/", ".")))))
            except (ImportError, TypeError, ValueError):  # not an importable package folder
                continue
    return dirs


def allowed(sources: Iterable[Any] | None = None, typed: Iterable[Any] = ()) -> Allowed:
    """What the project's configs (and the `typed` values: command-line overrides) name."""
    parts = [_named_in(str(d.resolve())) for d in config_dirs(sources) if d.is_dir()]
    typed_targets = {t for value in typed for *_, t in _targets(value)}
    return Allowed(
        frozenset(typed_targets.union(*(p.targets for p in parts))),
        frozenset(typed_targets.union(*(p.with_args for p in parts))),
        frozenset().union(*(p.write_values for p in parts)),
    )


@functools.cache
def _named_in(folder: str) -> Allowed:
    """Every `_target_` (read as plain YAML, no tags) in the YAML files under `folder`."""
    targets: set[str] = set()
    with_args: set[str] = set()
    writes: set[tuple[str, str, str]] = set()
    found = [*Path(folder).rglob("*.yaml"), *Path(folder).rglob("*.yml")]
    # A run folder's .hydra/config.yaml under a search path folder is a record, not a config.
    for path in sorted(p for p in found if not any(part.startswith(".") for part in p.parts)):
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # Hydra refuses it when it is used
        for _, node, target in _targets(doc):
            targets.add(target)
            if "_args_" in node:
                with_args.add(target)
            keys = (*WRITE_KEYS, *PATH_PART_KEYS)
            writes.update((target, k, str(node[k])) for k in keys if k in node)
    return Allowed(frozenset(targets), frozenset(with_args), frozenset(writes))


def _targets(tree: Any, where: str = "") -> Iterator[tuple[str, dict[Any, Any], str]]:
    """(dotted key prefix, node, target) for every node of plain `tree` whose `_target_` is a
    plain string."""
    if isinstance(tree, dict):
        target = tree.get("_target_")
        if isinstance(target, str) and "${" not in target:
            yield where, tree, target
        for key, value in tree.items():
            yield from _targets(value, f"{where}{key}.")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _targets(value, f"{where}{i}.")


def untrusted(tree: Any, allow: Allowed, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) of every `_target_` of `tree` (a DictConfig, or plain dicts and
    lists) that `allow` does not name, and every `_args_` of a target that takes none there.

    Interpolations are resolved where they can be (`${oc.create:...}`, `${oc.select:x,{...}}`
    make nodes), and what they make is checked too; a `_target_` must be a plain string."""
    found: list[tuple[str, Any]] = []
    _walk(tree, prefix, allow, found, set(), 0)
    return found


def _walk(node: Any, where: str, allow: Allowed, found: list, seen: set[int], depth: int) -> None:
    if id(node) in seen:
        return
    if depth > MAX_DEPTH:  # not walked, so not trusted: Hydra instantiates nodes at any depth
        found.append((f"{where[:60]}...", f"a node nested over {MAX_DEPTH} levels deep"))
        return
    if isinstance(node, DictConfig | ListConfig):
        seen.add(id(node))
    if isinstance(node, dict | DictConfig):
        keys = list(node.keys())
    elif isinstance(node, list | ListConfig):
        keys = list(range(len(node)))
    else:
        return
    raw = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
    if isinstance(raw, dict) and "_target_" in raw:
        target = raw["_target_"]
        plain = isinstance(target, str) and "${" not in target
        if not (plain and target in allow.targets):
            found.append((f"{where}_target_", target))
        elif "_args_" in raw and target not in allow.with_args:
            found.append((f"{where}_args_", raw["_args_"]))
    for key in keys:
        value = raw[key]
        if OmegaConf.is_config(node) and isinstance(value, str) and "${" in value:
            try:  # what the interpolation makes: a node of this tree, or a new one
                value = node[key]
            except Exception:  # needs Hydra's runtime (`${hydra:...}`) or a missing value
                continue
        elif OmegaConf.is_config(node) and isinstance(value, dict | list):
            value = node[key]
        _walk(value, f"{where}{key}.", allow, found, seen, depth + 1)


def _interpolations(tree: Any, where: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string of plain `tree` that holds `${`."""
    if isinstance(tree, str) and "${" in tree:
        yield where.rstrip("."), tree
    elif depth <= MAX_DEPTH and isinstance(tree, dict | list):
        for key, value in tree.items() if isinstance(tree, dict) else enumerate(tree):
            yield from _interpolations(value, f"{where}{key}.", depth + 1)


def refusal(found: list[tuple[str, Any]], subject: str, advice: str) -> LMTrainError:
    """One line naming the first `found` keys: `subject` names, `advice` says what to do."""
    named = ", ".join(f"{key}={value}" for key, value in found[:SHOWN])
    more = f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    return LMTrainError(
        f"{subject} names {named}{more}, which no config of this project names: {advice}"
    )


def check_stored_data(run_config: Any, subject: str, typed: Iterable[Any] = ()) -> None:
    """Refuse a model's stored run config (checkpoint or lmtrain.json) whose `data` names a
    target no config of the project names (`typed`: the user's own, trusted), or holds an
    interpolation (saved resolved, it has none: `${oc.create:...}` made unwalked nodes)."""
    data = run_config.get("data") if isinstance(run_config, dict | DictConfig) else None
    if data is None:
        return
    interpolated = next(_interpolations(data, "data."), None)
    if interpolated is not None:
        raise LMTrainError(
            f"{subject} holds {interpolated[0]}={interpolated[1]!r}, an interpolation, which "
            "lmtrain never saves (a run config is saved resolved): use only models you trust"
        )
    found = untrusted(data, allowed(typed=typed), "data.")
    if found:
        raise refusal(
            found,
            subject,
            "use only models you trust; for a data source of your own, pass the "
            "hydra.searchpath=[...] whose config names it (or +data.source._target_=...), or "
            "data=<name> to evaluate on other data",
        )


def check_resumed(value: str, resumed: DictConfig, command: DictConfig, folder: Path) -> None:
    """Refuse the config `resume=<value>` would run (the run's saved one with the typed overrides
    on top) when it names a target the project's configs and this command line do not, or
    writes outside the run `folder` where the project's configs do not."""
    record = f"resume={value}: its .hydra/config.yaml"
    if "hydra" in resumed:
        raise LMTrainError(
            f"{record} holds a hydra node, which Hydra never saves there: resume only runs you "
            "trust, or remove that node"
        )
    typed_keys, typed_values = typed_overrides(command.hydra.overrides.task)
    allow = allowed(command.hydra.runtime.config_sources, typed_values)
    found = untrusted(resumed, allow)
    if found:
        as_written = OmegaConf.to_container(resumed, resolve=False)
        targets = {where.rstrip("."): t for where, _, t in _targets(as_written)}
        nodes = [(key.rpartition(".")[0], key, v) for key, v in found[:SHOWN]]
        again = [
            f"++{node}._target_={v if key.endswith('_target_') else targets.get(node, '...')}"
            for node, key, v in nodes
        ]
        raise refusal(
            found,
            record,
            "resume only runs you trust; for configs of your own, pass the hydra.searchpath="
            f"[...] whose configs name them, or {' '.join(dict.fromkeys(again))} on the command "
            "line",
        )
    outside = outside_writes(resumed, command, folder, allow, typed_keys)
    if outside:
        named = ", ".join(f"{key}={raw}" for key, raw in outside[:SHOWN])
        first = outside[0][0]
        value = "<name>" if first.endswith(PATH_PART_KEYS) else "<folder>"
        raise LMTrainError(
            f"{record} sets {named}, outside the run folder {folder} where no config of this "
            f"project writes: resume only runs you trust, or pass ++{first}={value} on the "
            "command line"
        )


def typed_overrides(lines: Iterable[Any]) -> tuple[set[str], list[Any]]:
    """The keys the command line sets, and what it sets them to (targets as `{_target_: ...}`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: set[str] = set()
    values: list[Any] = []
    for override in OverridesParser.create().parse_overrides([str(o) for o in lines]):
        if override.is_delete():
            continue
        key, value = override.key_or_group, override.value()
        keys.add(key)
        if key.split(".")[-1] == "_target_" and isinstance(value, str):
            value = {"_target_": value}
        values.append(value)
    return keys, values


def outside_writes(
    resumed: DictConfig, command: DictConfig, folder: Path, allow: Allowed, typed: set[str]
) -> list[tuple[str, Any]]:
    """(key, value as saved) of each folder `resumed` writes into that is neither what the
    project's configs set for that target nor inside `folder` (resolved with this run's
    `paths.output_dir`), nor typed on the command line."""

    def is_typed(key: str) -> bool:
        parts = key.split(".")
        return any(".".join(parts[:i]) in typed for i in range(1, len(parts) + 1))

    plain = OmegaConf.to_container(resumed, resolve=False)
    found: list[tuple[str, Any]] = []
    probe = OmegaConf.create(plain)
    if isinstance(plain.get("paths"), dict) and "output_dir" in plain["paths"]:
        raw = plain["paths"]["output_dir"]
        theirs = OmegaConf.to_container(command.paths, resolve=False).get("output_dir")
        if raw != theirs and not is_typed("paths.output_dir"):
            found.append(("paths.output_dir", raw))
        probe.paths.output_dir = str(folder)
    for where, node, target in _targets(plain):
        for name in WRITE_KEYS:
            raw, key = node.get(name), f"{where}{name}"
            if raw is None or (target, name, str(raw)) in allow.write_values or is_typed(key):
                continue
            try:
                path = Path(str(OmegaConf.select(probe, key))).expanduser().resolve()
            except Exception:  # an interpolation that does not resolve here
                path = None
            if path is None or not (path == folder or folder in path.parents):
                found.append((key, raw))
        if not any(node.get(name) is not None for name in WRITE_KEYS):
            continue  # no folder to join a path part onto
        for name in PATH_PART_KEYS:
            raw, key = node.get(name), f"{where}{name}"
            if raw is None or (target, name, str(raw)) in allow.write_values or is_typed(key):
                continue
            try:
                value = str(resolved_as_run(probe, key, command))
            except Exception:  # an interpolation that does not resolve here
                value = "/"
            part = PurePath(value)
            if part.is_absolute() or ".." in part.parts or value.startswith("~"):
                found.append((key, raw))
            elif name == "filename" and any(set(f) & set("[]{") for f in NAME_FIELD.findall(value)):
                found.append((key, raw))  # item or attribute access in a field makes any text
    return found


def resolved_as_run(probe: DictConfig, key: str, command: DictConfig) -> Any:
    """`key` of `probe`, resolved as the run will: `${hydra:...}` with this command's Hydra
    config (Hydra sets it only once the job starts, after this check)."""
    if not HydraConfig.initialized() and "hydra" in command:
        HydraConfig.instance().set_config(copy.deepcopy(command))  # it marks `hydra` read-only
    return OmegaConf.select(probe, key)
