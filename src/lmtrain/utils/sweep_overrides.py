"""What a sweep varies (its sweep overrides, as the sweepers parse them), and what that asks of
the run's config and of `hydra.sweep.subdir`, checked before any job
(`lmtrain.utils.sweep_checks.refuse_sweep_that_cannot_start`)."""

from __future__ import annotations

import itertools
import re
from pathlib import PurePosixPath
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


def refuse_unknown_search_keys(
    config: DictConfig, overrides: dict[str, str], optuna: bool = True
) -> None:
    """Raise LMTrainError for a swept key this run's config does not have (without `+`): the
    generic Optuna space searches GPT-2's `model.config.n_embd`, and with `model=llama_tiny`
    trial 0 failed in Hydra's words, advising `+model.config.n_embd`, which Llama would take
    without a word and the search would then vary for nothing (red team rev_sweep). A swept
    group (`model/optimizer=choice(adamw,muon)`) brings keys of its own: each of its options
    is composed and checked, as its jobs would be; the study died at the first muon trial.
    A grid sweep (`optuna` False) is told of its sweep, not of Optuna's search space."""
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
            lacking = ", and sweep options that lack them in a sweep of their own" if choice else ""
            if not optuna:
                raise LMTrainError(
                    f"the sweep {shown} names {override.key_or_group}, which {whose}{missing}: "
                    f"sweep the keys of the model you train (check the spelling){lacking}"
                )
            raise LMTrainError(
                f"the search space {shown} names {override.key_or_group}, which {whose}{missing}: "
                "search the keys of the model you train (hparams_search/optuna.yaml assumes GPT-2 "
                f"and AdamW; copy it for another model){lacking.replace('sweep of', 'search of')}"
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


def compose_each_choice(
    config: DictConfig, swept: list[Override], with_hydra: bool = False
) -> dict[str, DictConfig]:
    """Each job's config ("key=option ..." -> its config) for every combination of the options
    of `swept` (sweep overrides of config groups or keys), composed as Hydra composes the jobs:
    with the sweep's fixed overrides, Hydra's included (hydra.searchpath finds experiments
    outside configs/); `with_hydra`: with the job's `hydra` node. A combination Hydra cannot
    compose is left out: its job says why."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    # With Hydra's config loader, as the sweeper parses them: `glob(...)` lists the options.
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    # As typed: `+callbacks.x.job=${hydra:job.num}` cannot be resolved outside a job.
    typed = OmegaConf.to_container(config.hydra.overrides, resolve=False)
    lines = parser.parse_overrides([*typed["hydra"], *typed["task"]])  # type: ignore[index]
    fixed = [o for o in lines if not o.is_sweep_override()]
    # A key also fixed: Optuna leaves it out of the search; the basic sweeper applies each job's
    # overrides in the order typed, so the sweep wins where it comes after (tests' paths.log_dir).
    last_fixed = {o.key_or_group: i for i, o in enumerate(lines) if not o.is_sweep_override()}
    at = {o.input_line: i for i, o in enumerate(lines)}
    optuna = "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()
    swept = [
        o
        for o in swept
        if o.key_or_group not in last_fixed
        or (not optuna and at.get(o.input_line, -1) > last_fixed[o.key_or_group])
    ]
    options = [parser.parse_overrides([o.input_line])[0] for o in swept]
    choices = itertools.product(
        *([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] for o in options)
    )
    jobs = {}
    for choice in choices:
        try:
            overrides = [*(o.input_line for o in fixed), *choice]
            jobs[" ".join(choice)] = compose(
                config.hydra.job.config_name, overrides=overrides, return_hydra_config=with_hydra
            )
        except Exception:  # a job Hydra cannot compose: its own message, then
            continue
    return jobs


def refuse_shared_job_folders(config: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a `hydra.sweep.subdir` that two jobs could share: Hydra writes a
    job's `.hydra/` record before the job can refuse the folder, so the refused job's config
    replaced the finished one's, and its resume and report then read the wrong seed (red team
    rev_sweep). The basic sweeper's jobs differ in what it varies: the subdir names each such
    key, and a group by `${hydra:runtime.choices.<group>}` (a key inside it may be the same in
    two options: `trainer=cpu,default` by `${trainer.max_steps}`), or `override_dirname`, which
    leaves out its `exclude_keys`; and no value is swept twice (`lr=1e-3,0.001`). Optuna may
    draw one point twice: its subdir must hold the job's number. A subdir that leaves the
    sweep's folder is refused too (`refuse_subdir_outside_sweep`)."""
    subdir = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["subdir"])  # type: ignore[index]
    refuse_subdir_outside_sweep(subdir)
    # `${hydra.job.num}` and `${hydra:job.num}` alike
    named = {
        ref.strip().replace("hydra:", "hydra.") for ref in re.findall(r"\$\{([^}]+)\}", subdir)
    }
    if named & JOB_UNIQUE:
        return
    choices = {n.removeprefix(CHOICES) for n in named if n.startswith(CHOICES)}
    sweeps = parsed_sweeps(overrides)
    varied = [o.key_or_group for o, _ in sweeps]
    if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
        missing = ["hydra.job.num (Optuna may draw one point twice)"]
    elif "hydra.job.override_dirname" in named:
        left_out = OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys")
        missing = [k for k in varied if k in list(left_out or [])]
    else:
        missing = [
            k
            for k in varied
            if k not in choices
            and (_is_group(config, k) or not any(n == k or n.startswith(f"{k}.") for n in named))
        ]
    if missing:
        first = missing[0].split()[0]
        add = f"${{hydra:runtime.choices.{first}}}" if _is_group(config, first) else f"${{{first}}}"
        raise LMTrainError(
            f"hydra.sweep.subdir={subdir} does not name {', '.join(missing)}, so jobs of the sweep "
            "would share a folder, and Hydra writes a job's .hydra/ record before the job can "
            f"refuse it, over the other's: add {add} to it, or leave it at its default "
            "${hydra.job.num}"
        )
    for override, shown in sweeps:
        twice = swept_twice(override)
        if twice is not None:
            raise LMTrainError(
                f"the sweep {shown} gives two jobs the value {twice}, and hydra.sweep.subdir="
                f"{subdir} would give them one folder, where Hydra writes the second job's .hydra/ "
                "record over the first's: sweep each value once, or add ${hydra.job.num} to "
                "hydra.sweep.subdir"
            )


# How a subdir names a group's choice, once `hydra:` is read as `hydra.`.
CHOICES = "hydra.runtime.choices."


def swept_twice(override: Override) -> str | None:
    """A value that the choice sweep `override` lists twice (`1e-3,0.001` are both 0.001, `x`
    and `'x'` both x), as the jobs' overrides and folders would show it; None if none."""
    from hydra.core.override_parser.types import ChoiceSweep

    if not isinstance(override.value(), ChoiceSweep):  # range() and glob() give each once
        return None
    seen: set[str] = set()
    for value in override.sweep_string_iterator():
        quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
        value = value[1:-1] if quoted else value
        if value in seen:
            return value
        seen.add(value)
    return None


def refuse_subdir_outside_sweep(subdir: str) -> None:
    """Raise LMTrainError for a `hydra.sweep.subdir` that puts the jobs outside the sweep's
    folder (absolute, or `..` in it) or in it (`.`): SweepOutcome and `lmtrain.report` read the
    jobs under the sweep's folder, and found none."""
    path = PurePosixPath(re.sub(r"\$\{[^}]*\}", "x", subdir))  # what names a job: a folder
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise LMTrainError(
            f"hydra.sweep.subdir={subdir} puts the jobs "
            + ("in the sweep's folder itself" if not path.parts else "outside the sweep's folder")
            + ", where neither the sweep's end nor lmtrain.report finds them: give a folder "
            "inside it, such as the default ${hydra.job.num}, and hydra.sweep.dir for where the "
            "sweep goes"
        )


def _is_group(config: DictConfig, key: str) -> bool:
    """Whether `key` is a config group (`trainer`, `model/optimizer`, `experiment`) rather than
    a key holding a value."""
    from hydra.core.global_hydra import GlobalHydra

    hydra = GlobalHydra.instance()
    if hydra.is_initialized() and hydra.config_loader().get_group_options(key):
        return True
    node = OmegaConf.select(config, key, throw_on_resolution_failure=False)
    return "/" in key or isinstance(node, DictConfig)
