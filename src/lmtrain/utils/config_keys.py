"""Names in a training config that name nothing: top-level keys no code reads, groups and
classes that are not there (metrics that no code logs: lmtrain.utils.metric_names).

Hydra composes whatever it is given, and a key that no code reads is dropped without a word.
A config of a group that should apply at the top (an experiment, `configs/local/default.yaml`)
written without `# @package _global_` puts its keys under `experiment:` or `local:`, so the run
ignores all of them and exits 0 (a typical quick experiment sets only keys); a misspelt setting
(`+sample.prompts=...`) sits beside the real one. Both are refused before any work. Other keys
of one's own (`+notes=...`, nanoGPT's `+learning_rate=...`) are kept, with a warning naming
them. Refused as well: a data or model config without its `_base` (a traceback after Hydra), and
a callback or logger class that does not exist (found after the data and the model were built).
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

from hydra.core.hydra_config import HydraConfig

from lmtrain.utils.checks import Problems, accepted_arguments
from lmtrain.utils.local_configs import hydra_node, missing_local
from lmtrain.utils.nested_keys import check_model_sub_keys, check_paths_keys
from lmtrain.utils.shadowed_configs import warn_shadowed_configs

log = logging.getLogger(__name__)

# configs/train.yaml's own keys and the groups whose configs sit under their own name.
TRAIN_KEYS = (
    "task_name",
    "tags",
    "seed",
    "resume",
    "ckpt_path",
    "overwrite_run",
    "global_batch_size",
    "optimized_metric",
    "samples",
    "data",
    "model",
    "callbacks",
    "logger",
    "trainer",
    "paths",
)
# The keys configs/eval.yaml, export.yaml and generate.yaml compose (their groups included).
EVAL_KEYS = (
    "task_name",
    "ckpt_path",
    "seed",
    "tags",
    "tasks",
    "num_fewshot",
    "limit",
    "batch_size",
    "max_length",
    "include_path",
    "data",
    "trainer",
    "logger",
    "paths",
)
EXPORT_KEYS = (
    "task_name",
    "ckpt_path",
    "out_dir",
    "overwrite",
    "verify",
    "merge",
    "generation",
    "model_name",
    "license",
    "paths",
)
GENERATE_KEYS = (
    "task_name",
    "ckpt_path",
    "prompt",
    "prompt_file",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "greedy",
    "num_samples",
    "separator",
    "stop_at_eos",
    "seed",
    "device",
    "paths",
)
# train.yaml's `samples:` settings, which the samples callback and the export read by name.
SAMPLES_KEYS = ("prompts", "max_new_tokens", "temperature", "top_k", "every_n_val")
# Packages whose callback and logger classes get their keys checked (see check_arguments).
CHECKED_PACKAGES = ("lightning.", "lmtrain.")
# Groups whose configs apply at the top (`# @package _global_`): never a node of their own.
GLOBAL_GROUPS = ("experiment", "hparams_search", "debug", "local")


def check_config_names(cfg: Mapping[str, Any], problems: Problems) -> None:
    """The top-level keys of `cfg`, the `_target_` of its data, model and trainer, and the
    classes its callbacks and loggers name."""
    check_top_level_keys(cfg, problems)
    check_samples_keys(cfg.get("samples"), problems)
    check_group_targets(cfg, problems)
    for group in ("callbacks", "logger"):
        entries = cfg.get(group)
        for name, entry in entries.items() if isinstance(entries, Mapping) else ():
            target = entry.get("_target_") if isinstance(entry, Mapping) else None
            missing = missing_target(target) if isinstance(target, str) else None
            if missing:
                problems.add(f"{group}.{name}._target_={target!r} names nothing: {missing}")
            elif isinstance(target, str) and target.startswith(CHECKED_PACKAGES):
                check_arguments(f"{group}.{name}", target, entry, problems)
    # The Trainer's, the data's and the model's own keys too: `+trainer.max_epoch=1` was
    # Trainer's TypeError after data prep and the model build, `+data.blocksize=16` a TypeError
    # with no close match, `+model.compilee=true` (and `+model.peft.rr=3`) found after data prep.
    data, model = cfg.get("data"), cfg.get("model")
    for key, entry in (("trainer", cfg.get("trainer")), ("data", data), ("model", model)):
        check_entry_arguments(key, entry, problems)
    if lmtrain_target(model):  # a class of one's own may read them otherwise
        check_model_sub_keys(model, problems)
    if isinstance(data, Mapping):
        check_entry_arguments("data.source", data.get("source"), problems)


def check_entry_arguments(key: str, entry: Any, problems: Problems) -> None:
    """`check_arguments` for one node whose `_target_` names a Lightning or lmtrain class (an
    unknown target is `check_group_targets`' to name)."""
    if lmtrain_target(entry):
        check_arguments(key, entry["_target_"], entry, problems)


def lmtrain_target(entry: Any) -> bool:
    """Whether `entry`'s `_target_` names a Lightning or lmtrain class that is there."""
    target = entry.get("_target_") if isinstance(entry, Mapping) else None
    known = isinstance(target, str) and target.startswith(CHECKED_PACKAGES)
    return known and not missing_target(target)


def check_samples_keys(samples: Any, problems: Problems) -> None:
    """A misspelt `samples.` key (`+samples.every_nval=2`, the `+` Hydra asks for a new key) sat
    beside the real one, which kept its default without a word."""
    for key in sorted(set(samples) - set(SAMPLES_KEYS)) if isinstance(samples, Mapping) else ():
        near = difflib.get_close_matches(str(key), SAMPLES_KEYS, n=1)
        hint = f"did you mean samples.{near[0]}?" if near else "it takes " + ", ".join(SAMPLES_KEYS)
        problems.add(f"samples.{key} is not a samples setting: {hint}")


def check_arguments(key: str, target: str, entry: Mapping[str, Any], problems: Problems) -> None:
    """Keys of a Lightning or lmtrain callback or logger that its class does not take
    (`callbacks.model_checkpoint.save_top_K`): found when the callbacks were built, after the
    data and the model. Classes of one's own are left to their constructor: what their
    `**kwargs` do cannot be read from their signature."""
    cls, _ = locate(target)
    accepted = accepted_arguments(cls) if inspect.isclass(cls) else None
    if accepted is not None:
        given = [str(k) for k in entry if not str(k).startswith("_")]
        problems.unknown_arguments(key, given, accepted, target.rpartition(".")[2])


# Settings under a part, for the entry points that have parts (generate's are flat).
PART_SETTINGS = {
    "lmtrain.train": "model.optimizer.lr, trainer.max_steps",
    "lmtrain.eval": "trainer.precision, trainer.accelerator",
    "lmtrain.export": "generation.temperature, generation.top_k",
}


def check_top_level_keys(
    cfg: Mapping[str, Any],
    problems: Problems,
    own: tuple[str, ...] = TRAIN_KEYS,
    entry: str = "lmtrain.train",
) -> None:
    """Each top-level key of `cfg` (a composed config of `entry`, whose keys are `own`) that no
    code reads: `lmtrain.generate +max_new_token=5` sampled 200 tokens without a word."""
    if missing := missing_local(hydra_node(cfg)):  # `local=mybx`: Hydra's `optional` drops it
        problems.add(missing)
    warn_shadowed_configs(hydra_node(cfg))  # an own config passed over for a shipped one
    check_paths_keys(cfg.get("paths"), problems, hydra_node(cfg))  # `++paths.logdir=/x`
    for key in cfg:
        if key in own or key == "hydra":  # `hydra`: Hydra's own (in tests' composes)
            continue
        if key in GLOBAL_GROUPS and isinstance(cfg[key], Mapping):
            problems.add(
                f"the {key} config {group_choice(key)}.yaml has no `# @package _global_` first "
                f"line, so its keys ({', '.join(map(str, cfg[key]))}) landed under `{key}:`, "
                "where nothing reads them: add that line at the top of the file"
            )
            continue
        close = difflib.get_close_matches(str(key), own, n=1, cutoff=0.8)
        if close:  # a misspelt setting: refused
            problems.add(
                f"{key} is not a setting of {entry}, so nothing would read it: did you "
                f"mean {close[0]}?"
            )
        else:  # `+notes=...`, values for `${...}`: kept in the run's config, and named
            parts = PART_SETTINGS.get(entry)
            log.warning(
                "%s is not a setting of %s: it is kept in the run's config, and no code reads "
                "it, only a ${...} that names it%s",
                key,
                entry,
                f" (settings of a part go under it: {parts}, ...)" if parts else "",
            )


def check_group_targets(cfg: Mapping[str, Any], problems: Problems) -> None:
    """A data, model or trainer config (or data.source) without `_target_`: one written without
    the defaults line that brings it (`defaults: [_base, _self_]`), or a trainer config that
    does not start from `default`. It was a traceback (`Missing key prepare_data`) after Hydra.
    A `_target_` there that names nothing is named too."""
    nodes = {group: cfg.get(group) for group in ("data", "model", "trainer")}
    data = nodes["data"]
    if isinstance(data, Mapping) and isinstance(data.get("source"), Mapping):
        nodes["data.source"] = data["source"]
    for key, node in nodes.items():
        target = node.get("_target_") if isinstance(node, Mapping) else None
        missing = missing_target(target) if isinstance(target, str) else None
        if missing:  # found after the data preparation, in Hydra's words
            problems.add(f"{key}._target_={target!r} names nothing: {missing}")
        if not isinstance(node, Mapping) or "_target_" in node:
            continue
        group = key.split(".")[0]
        if key == "data.source":
            advice = "give it the class that reads the corpus (lmtrain.data.sources.*)"
        else:
            base = "default" if group == "trainer" else "_base"
            advice = f"start it with `defaults: [{base}, _self_]`, as configs/{group}/ do"
        problems.add(
            f"{key} has no _target_ (the {group} config {group_choice(group)}.yaml): {advice}"
        )


def missing_target(target: str) -> str | None:
    """What is missing of the class path `target` (the advice), or None when it is found.

    Checked before any work: a typo was found when the callbacks were built, after the data
    preparation and the model's build, and Hydra's words for a module without that class
    (`'mycb' is not a package`) pointed elsewhere."""
    return locate(target)[1]


def locate(target: str) -> tuple[Any, str | None]:
    """The object at the class path `target` and None, or None and what is missing of it.

    Looked up as Hydra does (the longest module prefix, then attributes: `module.Class.create`
    too), without the error Hydra's `get_object` logs. A module that fails for another reason
    (a bug in it) gives (None, None): instantiation shows its trace."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        name = ".".join(parts[:cut])
        try:
            found: Any = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name is None:  # raised by the module's own code: its trace, when built
                return None, None
            # This prefix (or a package above it) is not a module: try a shorter one. A module
            # that exists but imports a missing one is named with what it needs.
            if name == err.name or name.startswith(err.name + "."):
                continue
            return None, f"{name} needs the module {err.name!r}: install the package providing it"
        except Exception:  # the module's own failure: reported, with its trace, when built
            return None, None
        for depth, attribute in enumerate(parts[cut:], cut):
            if not hasattr(found, attribute):
                names = [n for n in dir(found) if not n.startswith("_")]
                close = difflib.get_close_matches(attribute, names, n=1)
                hint = f": did you mean {close[0]}?" if close else ""
                return None, f"{'.'.join(parts[:depth])} has no {attribute}{hint}"
            found = getattr(found, attribute)
        if cut == len(parts):
            return None, f"{target} is a module: name a class in it"
        return found, None
    return None, f"no module {parts[0]!r}: check the path's spelling, or install its package"


def group_choice(group: str) -> str:
    """The config picked for `group` in this Hydra run (`<name>` outside one)."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if choice:
            return str(choice)
    return "<name>"
