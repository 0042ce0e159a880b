"""The config nodes an entry point cannot run without, refused in one line when removed.

Hydra's `~model` drops a group from the defaults list, `~data.source` a node from the composed
config, and nothing refuses either before lmtrain reads them: the first read (`cfg.model`, in
struct mode) was a ConfigAttributeError traceback, for `~data.source` after the run folder was
claimed, and `~model ~data` named only data.block_size=None. The config checks read these nodes
as mappings, so this one runs first and raises at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.utils.checks import Problems
from lmtrain.utils.group_overrides import CONFIGS
from lmtrain.utils.typed_overrides import removed_on_command_line

# What lmtrain.train reads as mappings: three groups, the corpus inside the data config, and the
# folders (from Python: the command line's run folder needs paths before any check runs).
TRAIN_NODES = ("model", "data", "data.source", "trainer", "paths")
# lmtrain.eval builds a Trainer and writes into paths.output_dir; its data group is optional.
EVAL_NODES = ("trainer", "paths")


def refuse_removed_nodes(cfg: Any, keys: Sequence[str]) -> None:
    """Raise LMTrainError naming each of `keys` (full keys, parents first) that `cfg` lacks or
    holds as something other than a mapping; a removed parent hides its children."""
    problems = Problems()
    found: list[str] = []
    for key in keys:
        if any(key.startswith(f"{parent}.") for parent in found):
            continue
        parent, _, name = key.rpartition(".")
        node = cfg
        for part in parent.split(".") if parent else []:
            node = node.get(part) if isinstance(node, Mapping) else None
        # `name in node` is False for `???` too: each is unset, and neither is resolved here.
        if not isinstance(node, Mapping) or name not in node:
            found.append(key)
            removed = f" ('~{key}' removed it)" if removed_on_command_line(key) else ""
            problems.add(f"{key} is not set{removed}: {advice(key)}")
            continue
        if isinstance(node, DictConfig) and OmegaConf.is_interpolation(node, name):
            continue  # `${...}`: the config checks resolve it, and name one that does not
        value = node[name]
        if not isinstance(value, Mapping):
            found.append(key)
            problems.add(f"{key}={value!r} is not a config: {advice(key)}")
    problems.raise_if_any()


def advice(key: str) -> str:
    """What to pass for `key`: a config of its group, or (a node inside a group's config, such
    as data.source) that group's config whole."""
    group, _, inner = key.partition(".")
    names = group_configs(group)
    choice = names[0] if len(names) == 1 else f"<one of {', '.join(names)}>"
    if not inner:
        return f"pass {key}={choice}"
    return f"drop the override (each {group} config sets its {inner}), or pass {group}={choice}"


def group_configs(group: str) -> list[str]:
    """The configs of lmtrain's config group `group` (configs/<group>/*.yaml), by name."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if p.stem != "_base")
