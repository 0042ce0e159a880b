"""What a sweep varies (its sweep overrides, as the sweepers parse them), and what that asks of
the run's config and of `hydra.sweep.subdir`, checked before any job
(`lmtrain.utils.sweep_checks.refuse_sweep_that_cannot_start`)."""

from __future__ import annotations

import itertools
import re
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# What names one job of a sweep alone, in hydra.sweep.subdir.
JOB_UNIQUE = {"hydra.job.num", "hydra.job.id"}


def parsed_sweeps(overrides: dict[str, str]) -> list[tuple[Override, str]]:
    """Each sweep override of `overrides` (line: where it comes from), parsed as the sweepers
    parse them, with the text an error shows; lines Hydra cannot parse are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    sweeps = []
    for line, source in overrides.items():
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
        except HydraException:
            continue
        if override.is_sweep_override():
            sweeps.append((override, f"{source}={line.split('=', 1)[1]}" if source else line))
    return sweeps


def refuse_unknown_search_keys(config: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a swept key this run's config does not have (without `+`): the
    generic Optuna space searches GPT-2's `model.config.n_embd`, and with `model=llama_tiny`
    trial 0 failed in Hydra's words, advising `+model.config.n_embd`, which Llama would take
    without a word and the search would then vary for nothing (red team rev_sweep). A swept
    group (`model/optimizer=choice(adamw,muon)`) brings keys of its own: each of its options
    is composed and checked, as its jobs would be; the study died at the first muon trial."""
    from hydra.core.global_hydra import GlobalHydra

    sweeps = parsed_sweeps(overrides)
    loader = GlobalHydra.instance().config_loader()
    groups = {o.key_or_group: o for o, _ in sweeps if loader.get_group_options(o.key_or_group)}
    keys = [
        (o, shown)
        for o, shown in sweeps
        if o.key_or_group not in groups
        and not (o.is_add() or o.is_force_add() or o.key_or_group.startswith("hydra"))
    ]
    if not keys:
        return
    jobs = compose_each_choice(config, list(groups.values())) if groups else {"": config}
    for choice, job in jobs.items():
        whose = f"the jobs of {choice} do not have" if choice else "this run's config does not have"
        for override, shown in keys:
            missing = missing_key(job, override.key_or_group)
            if missing is None:
                continue
            raise LMTrainError(
                f"the search space {shown} names {override.key_or_group}, which {whose}{missing}: "
                "search the keys of the model you train (hparams_search/optuna.yaml assumes GPT-2 "
                "and AdamW; copy it for another model)"
                + (", and sweep options that lack them in a search of their own" if choice else "")
            )


def missing_key(config: DictConfig, key: str) -> str | None:
    """None if `config` has `key` (or Hydra alone can say: a list's item, a value's child), else
    what its parent has instead, as " (parent has a, b)" ("" with no parent). Whether the key
    exists, not its value: a `???` (data.source.path) or an interpolation only a job resolves
    is a key the sweep sets (and `in` is False for a `???`)."""
    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(config, parent, throw_on_resolution_failure=False)
    node = config if not parent else node
    if not isinstance(node, DictConfig) and node is not None:
        return None  # a list's item, or a value: Hydra says what it makes of it
    keys = [str(k) for k in node] if node is not None else []  # `???` ones too
    if last in keys:
        return None
    return f" ({parent} has {', '.join(keys)})" if node is not None else ""


def compose_each_choice(config: DictConfig, swept: list[Override]) -> dict[str, DictConfig]:
    """Each job's config ("key=option ..." -> its config) for every combination of the options
    of `swept` (sweep overrides of config groups or keys), composed as Hydra composes the jobs:
    with the sweep's fixed overrides, Hydra's included (hydra.searchpath finds experiments
    outside configs/). A combination Hydra cannot compose is left out: its job says why."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # With Hydra's config loader, as the sweeper parses them: `glob(...)` lists the options.
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    # As typed: `+callbacks.x.job=${hydra:job.num}` cannot be resolved outside a job.
    typed = OmegaConf.to_container(config.hydra.overrides, resolve=False)
    lines = parser.parse_overrides([*typed["hydra"], *typed["task"]])  # type: ignore[index]
    fixed = [o for o in lines if not o.is_sweep_override()]
    swept = [o for o in swept if o.key_or_group not in {f.key_or_group for f in fixed}]
    options = [parser.parse_overrides([o.input_line])[0] for o in swept]
    choices = itertools.product(
        *([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in options)
    )
    jobs = {}
    for choice in choices:
        try:
            overrides = [*(o.input_line for o in fixed), *choice]
            jobs[" ".join(choice)] = compose(config.hydra.job.config_name, overrides=overrides)
        except Exception:  # a job Hydra cannot compose: its own message, then
            continue
    return jobs


def refuse_shared_job_folders(config: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a `hydra.sweep.subdir` that two jobs could share: Hydra writes a
    job's `.hydra/` record before the job can refuse the folder, so the refused job's config
    replaced the finished one's, and its resume and report then read the wrong seed (red team
    rev_sweep). The basic sweeper's jobs differ in what it varies: the subdir names each such
    key (a group by `${hydra:runtime.choices.<group>}`), or `override_dirname`, which leaves out
    its `exclude_keys`. Optuna may draw one point twice: its subdir must hold the job's number."""
    subdir = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"])  # type: ignore[index]
    # `${hydra.job.num}` and `${hydra:job.num}` alike; a group's choice names the group
    named = {
        ref.strip().replace("hydra:", "hydra.").removeprefix("hydra.runtime.choices.")
        for ref in re.findall(r"\$\{([^}]+)\}", subdir)
    }
    if named & JOB_UNIQUE:
        return
    varied = [o.key_or_group for o, _ in parsed_sweeps(overrides)]
    if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
        missing = ["hydra.job.num (Optuna may draw one point twice)"]
    elif "hydra.job.override_dirname" in named:
        left_out = OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys")
        missing = [k for k in varied if k in list(left_out or [])]
    else:
        missing = [k for k in varied if not any(n == k or n.startswith(f"{k}.") for n in named)]
    if not missing:
        return
    first = missing[0].split()[0]
    group = "/" in first or not _is_value(config, first)  # a node: its group's choice names it
    add = f"${{hydra:runtime.choices.{first}}}" if group else f"${{{first}}}"
    raise LMTrainError(
        f"hydra.sweep.subdir={subdir} does not name {', '.join(missing)}, so jobs of the sweep "
        "would share a folder, and Hydra writes a job's .hydra/ record before the job can "
        f"refuse it, over the other's: add {add} to it, or leave it at its default "
        "${hydra.job.num}"
    )


def _is_value(config: DictConfig, key: str) -> bool:
    """Whether `key` holds a plain value rather than a node (a config group's)."""
    node = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    return not isinstance(node, DictConfig)
