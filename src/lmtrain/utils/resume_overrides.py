"""The overrides typed with `resume=`, applied on top of the resumed run's saved config.

Split from `lmtrain.callbacks.resume_run` (which finds the run): this is the part that reads
the run's saved config and decides what the resumed run's config is, and what it may not
change. Every step can be applied twice with the same result, because DDP ranks > 0, torchrun
ranks and requeued jobs repeat the command after rank 0 has written the resumed config as the
run's record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.unresolved_folder import as_typed

# What a resumed run keeps from the run it continues: the model's shape (its checkpoint's weights
# and optimizer state must fit; model.freeze sets which parameters have optimizer state) and the
# data (tokens, windows, and the seed that picks the train windows through data.seed).
FIXED_KEYS = (
    "model._target_",
    "model.model_type",
    "model.config",
    "model.pretrained",
    "model.freeze",
    "model.optimizer._target_",  # AdamW's state does not load into Muon's parts, nor back
    "data._target_",
    "data.source",
    "data.tokenizer",
    "data.block_size",
    "data.seed",
    "seed",
)
ABSENT = object()
log = logging.getLogger(__name__)


def resumed_config(
    value: str, config: DictConfig, config_name: str, saved: DictConfig, choices: dict[str, Any]
) -> tuple[DictConfig, dict[str, Any]]:
    """`saved` with the typed overrides applied, and the group choices that changed.

    A key override is applied as `++key=value` (`~key`: removed if there), so that applying it
    again changes nothing. A group override that names another option than the run's changes,
    in the run's part of the config, what the switch of option changes (`trainer=gpu`: the
    accelerator, devices and precision; the run's own max_steps and the like stay); a group
    that sets keys elsewhere (experiment, debug, ...) is refused.
    """
    typed = as_typed(config.hydra.overrides.task)
    loader, searched = GlobalHydra.instance().config_loader(), searchpath_lines(config)
    with composing(value, "the command's config"):
        defaults = loader.compute_defaults_list(config_name, searched + typed, RunMode.RUN)
    key_lines = {o.input_line for o in defaults.config_overrides}
    resumed = OmegaConf.create(OmegaConf.to_container(saved, resolve=False))
    set_keys: dict[str, str] = {}  # override -> the key it sets
    groups: dict[str, Any] = {}
    elsewhere: list[str] = []
    key_overrides: list[Override] = []
    for override in OverridesParser.create().parse_overrides(typed):
        key, line = override.key_or_group, str(override.input_line)
        if key == "resume":
            continue
        if line in key_lines:
            apply_key_override(resumed, override)
            set_keys[line] = key
            key_overrides.append(override)
            continue
        choice = override.value()
        package = group_package(defaults.defaults, key, choice)
        # The run's own option, typed again: nothing to apply, unless the run had set its part
        # to null (model.scheduler=null) and the option now turns it back on.
        nulled = package is not None and OmegaConf.select(resumed, package) is None
        if key in choices and choices[key] == choice and not override.is_delete() and not nulled:
            continue
        if package is None:
            elsewhere.append(line)
            continue
        part = OmegaConf.select(config, package, throw_on_missing=False)
        if part is None:
            apply_key_override(resumed, OverridesParser.create().parse_override(f"~{package}"))
        elif key in choices and OmegaConf.select(resumed, package) is not None:
            with composing(value, f"the run's {key}={choices[key]}", f", or drop {line}"):
                changes = option_changes(config_name, key, choices[key], choice, searched)
            switch_option(resumed, package, changes)
        else:
            whole = OmegaConf.to_container(part)
            OmegaConf.update(resumed, package, whole, merge=False, force_add=True)
        set_keys[line], groups[key] = package, choice
    for override in key_overrides:  # typed keys win over what an option switch changed
        apply_key_override(resumed, override)
    if elsewhere:
        raise LMTrainError(
            f"resume={value} applies overrides on top of the run's saved config, and "
            f"{', '.join(elsewhere)} sets keys across it (or drops a group): give the keys to "
            "change instead (trainer.max_steps=...), or start a new run without resume="
        )
    refuse_fixed_changes(value, saved, resumed, set_keys)
    return resumed, groups


def searchpath_lines(config: DictConfig) -> list[str]:
    """The command's `hydra.searchpath=[...]`, if typed (a Hydra override, not a task one): the
    user's config folders, which every config the resume composes again must search too."""
    parsed = OverridesParser.create().parse_overrides(as_typed(config.hydra.overrides.hydra))
    return [str(o.input_line) for o in parsed if o.get_key_element() == "hydra.searchpath"]


@contextmanager
def composing(value: str, what: str, other: str = "") -> Iterator[None]:
    """Hydra's refusal to compose `what` again (`Could not find 'logger/mine'`) as one line."""
    try:
        yield
    except ConfigCompositionException as err:
        raise LMTrainError(
            f"resume={value}: {what} cannot be composed ({first_line(err)}): pass the "
            f"hydra.searchpath=[...] (or --config-dir) that holds the run's own configs{other}"
        ) from None


def option_changes(
    config_name: str, group: str, old: Any, new: Any, searched: list[str]
) -> list[tuple[str, Any]]:
    """What switching `group` from option `old` to `new` changes in its part, each option
    composed alone on the command's search path: (dotted key, new value or ABSENT)."""
    loader = GlobalHydra.instance().config_loader()
    parts = []
    for option in (old, new):
        cfg = loader.load_configuration(config_name, [*searched, f"{group}={option}"], RunMode.RUN)
        part = OmegaConf.select(cfg, group.replace("/", "."), throw_on_missing=False)
        parts.append(OmegaConf.to_container(part) if part is not None else {})
    return tree_changes(parts[0], parts[1])


def tree_changes(before: Any, after: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value or ABSENT) that turn `before` into `after`, subtrees whole."""
    if not (isinstance(before, dict) and isinstance(after, dict)):
        return [] if before == after else [(prefix.rstrip("."), after)]
    changes = [(f"{prefix}{k}", ABSENT) for k in before if k not in after]
    for key, value in after.items():
        if key not in before:
            changes.append((f"{prefix}{key}", value))
        else:
            changes += tree_changes(before[key], value, f"{prefix}{key}.")
    return changes


def switch_option(cfg: DictConfig, package: str, changes: list[tuple[str, Any]]) -> None:
    """Apply `option_changes` to the run's part at `package` (a key the run set to null stays
    null); log what moved."""
    moved = []
    for key, value in changes:
        path = f"{package}.{key}"
        if value is ABSENT:
            apply_key_override(cfg, OverridesParser.create().parse_override(f"~{path}"))
            moved.append(f"~{path}")
            continue
        parent = path.rpartition(".")[0]
        if OmegaConf.select(cfg, parent, throw_on_missing=False, default=ABSENT) is None:
            continue  # e.g. callbacks.text_samples=null in the run: it stays off
        OmegaConf.update(cfg, path, value, merge=False, force_add=True)
        moved.append(f"{path}={value!r}")
    log.info(
        "Resuming with another %s option: %s; the run's other %s keys stay",
        package,
        ", ".join(moved) or "nothing changes",
        package,
    )


def apply_key_override(cfg: DictConfig, override: Override) -> None:
    """`key=value`, `+key=value` and `++key=value` set (and merge); `~key` removes if there."""
    key = override.key_or_group
    if not override.is_delete():
        OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    if isinstance(node, DictConfig) and leaf in node:
        with open_dict(node):
            del node[leaf]


def group_package(defaults: list[Any], group: str, choice: Any) -> str | None:
    """Where the option `choice` of `group` lands, when that is the group's own key (logger,
    model.optimizer); None when it sets keys elsewhere (`# @package _global_`) or is no option."""
    if not isinstance(choice, str):
        return None
    own = group.replace("/", ".")
    packages = {d.package for d in defaults if d.config_path == f"{group}/{choice}"}
    return own if packages == {own} else None


def refuse_fixed_changes(
    value: str, saved: DictConfig, resumed: DictConfig, set_keys: dict[str, str]
) -> None:
    """One error naming every override that changes a `FIXED_KEYS` entry, compared as typed
    (`${paths.data_dir}/...` stays the same wherever paths.data_dir now points)."""
    before = OmegaConf.to_container(saved, resolve=False)
    after = OmegaConf.to_container(resumed, resolve=False)
    changed = [
        k
        for k in FIXED_KEYS
        if lookup(before, k) != lookup(after, k) and not same_resolved(saved, resumed, k)
    ]
    if not changed:
        return

    def changes_one(key: str) -> bool:  # a group's part holds a changed key, or a key changed
        return any(
            c.startswith(key + ".")
            or ((key == c or key.startswith(c + ".")) and lookup(before, key) != lookup(after, key))
            for c in changed
        )

    refused = [line for line, key in set_keys.items() if changes_one(key)]
    raise LMTrainError(
        f"resume={value} keeps the model's shape and the data of the run it continues, and "
        f"{', '.join(refused or changed)} would change {', '.join(changed)}: drop "
        f"{'it' if len(refused) == 1 else 'them'}, or start a new run without resume="
    )


def same_resolved(saved: DictConfig, resumed: DictConfig, key: str) -> bool:
    """Whether `key` resolves to the same value in both (`data.seed=1337` typed for the run's
    `${oc.select:seed,null}` that gave 1337); False when either does not resolve."""
    try:
        a, b = (OmegaConf.select(c, key, throw_on_missing=True) for c in (saved, resumed))
        if isinstance(a, DictConfig) or isinstance(b, DictConfig):
            a, b = (OmegaConf.to_container(v, resolve=True) for v in (a, b))
        return a == b
    except Exception:  # an interpolation that needs Hydra's runtime, or a missing value
        return False


def lookup(tree: Any, key: str) -> Any:
    """The value at dotted `key` in nested dicts, or a marker when there is none."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return ABSENT
        tree = tree[part]
    return tree


# The entry points whose runs hold no training to resume (their configs/<name>.yaml).
OTHER_TOOLS = ("eval", "generate", "export")


def load_saved(value: str, record: Path) -> tuple[DictConfig, dict[str, Any]]:
    """The run's saved config and its config group choices (`hydra.runtime.choices`)."""
    path = record / "config.yaml"
    try:
        saved = OmegaConf.load(path)
    except Exception as err:  # missing, unreadable, not YAML
        raise LMTrainError(
            f"resume={value}: the run's config {path} cannot be read ({first_line(err)}): "
            f"restore it (an earlier copy may be in {record / 'previous'}), or resume with "
            "ckpt_path=last hydra.run.dir=<run folder> and the run's overrides"
        ) from None
    if not isinstance(saved, DictConfig):
        raise LMTrainError(
            f"resume={value}: the run's config {path} is not a mapping: restore it, or resume "
            "with ckpt_path=last hydra.run.dir=<run folder> and the run's overrides"
        )
    try:
        choices = OmegaConf.select(OmegaConf.load(record / "hydra.yaml"), "hydra.runtime.choices")
    except Exception:  # only used to skip a group override that names the run's own choice
        choices = None
    if not isinstance(choices, DictConfig):  # missing, or edited into a list: none are known
        return saved, {}
    # A group's choice is a name (or null): a value edited into anything else is left out.
    found = OmegaConf.to_container(choices, resolve=False).items()
    return saved, {str(k): v for k, v in found if v is None or isinstance(v, str)}


def check_same_entry_point(value: str, record: Path, saved: DictConfig, config_name: str) -> None:
    """Refuse a run folder whose saved config is another tool's (lmtrain.eval, generate, ...):
    resuming would build this run from a config without a model or training settings.

    The entry point is `hydra.job.config_name` in the run's hydra.yaml (task_name is the user's
    to choose, and a training config may have another name); a folder without one is left to
    the checks that follow."""
    try:
        hydra_yaml = OmegaConf.load(record / "hydra.yaml")
        saved_name = OmegaConf.select(hydra_yaml, "hydra.job.config_name")
    except Exception:  # missing or unreadable: nothing to compare with
        return
    if saved_name == config_name or saved_name not in OTHER_TOOLS:
        return
    raise LMTrainError(
        f"resume={value}: the run's config {record / 'config.yaml'} is one of lmtrain."
        f"{saved_name} (task_name={saved.get('task_name')}), not of lmtrain.{config_name}: pass "
        f"a folder of a lmtrain.{config_name} run; if another tool overwrote this run's .hydra/, "
        "resume with ckpt_path=last hydra.run.dir=<run folder> and the run's overrides"
    )
