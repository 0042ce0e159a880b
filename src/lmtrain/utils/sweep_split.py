"""Whether a sweep's jobs stay in its folder, checked before any job.

Hydra resolves `hydra.sweep.dir` once with the sweep's own config (the folder SweepOutcome and
`lmtrain.report` read) and again in each job with the job's. Its default,
`${paths.log_dir}/${task_name}/multiruns/<time>`, then differs between jobs of a sweep over what
names it: `-m experiment=a,b` whose experiments set task_name (as in lightning-hydra-template),
`paths.log_dir=A,B` or `paths.root_dir=A,B`. Each job went to a folder of its own, outside the
sweep's: SweepOutcome saw no job, a sweep whose every job failed exited 0, and `lmtrain.report`
showed one job a folder.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf, read_write

from lmtrain.errors import LMTrainError
from lmtrain.utils.sweep_overrides import compose_each_choice

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# A plain `${key}` (not a resolver's `${now:...}`), inside a resolver's arguments too.
KEY_REFERENCE = re.compile(r"\$\{\s*([\w.\-]+)\s*\}")


def refuse_sweep_split_across_folders(config: DictConfig) -> None:
    """Raise LMTrainError when a job of the sweep would resolve `hydra.sweep.dir` to another
    folder than the sweep's own. The jobs of each swept group (which may set any key) and of
    each swept key that the folder's name is built from are composed as Hydra composes them."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    template = str(OmegaConf.to_container(config.hydra.sweep, resolve=False)["dir"])  # type: ignore[index]
    if "${" not in template:  # hydra.sweep.dir=<one folder>: the same for every job
        return
    loader = GlobalHydra.instance().config_loader()
    # With Hydra's config loader, as the sweeper parses them: `glob(...)` lists the options.
    parser = OverridesParser.create(config_loader=loader)
    # As typed: `+callbacks.x.job=${hydra:job.num}` cannot be resolved outside a job.
    typed = OmegaConf.to_container(config.hydra.overrides, resolve=False)
    parsed = parser.parse_overrides(list(typed["task"]))  # type: ignore[index]
    names_folder = folder_keys(config, template)
    swept = [
        o
        for o in parsed
        if o.is_sweep_override()
        and (loader.get_group_options(o.key_or_group) or names_it(o, names_folder))
    ]
    if not swept:
        return
    own = str(config.hydra.sweep.dir)  # first: `${now:...}` is cached, and copied to each job
    jobs = compose_each_choice(config, swept, with_hydra=True)
    folders = {choice: job_folder(job, template, config) for choice, job in jobs.items()}
    elsewhere = {choice: folder for choice, folder in folders.items() if folder not in (own, None)}
    if not elsewhere:  # none: options Hydra lists only later
        return
    names = {choice: str(job.task_name) for choice, job in jobs.items()}
    if set(names.values()) != {str(config.task_name)}:
        runs = ", ".join(f"{choice} runs as {name}" for choice, name in names.items())
        raise LMTrainError(
            f"the jobs of this sweep run under other task_names than its own, {config.task_name} "
            f"({runs}), and the sweep's folder is named by task_name: its results would be split "
            "across logs/<task_name>/multiruns and failed jobs missed: pass task_name=<one name> "
            "with the sweep"
        )
    runs = ", ".join(f"{choice} runs in {folder}" for choice, folder in elsewhere.items())
    raise LMTrainError(
        f"jobs of this sweep would run outside its folder {own} ({runs}), as hydra.sweep.dir="
        f"{template} is resolved again with each job's config: the sweep would miss their results "
        "and failures: sweep keys that do not name its folder, or pass hydra.sweep.dir=<one "
        "folder> with the sweep"
    )


def folder_keys(config: DictConfig, template: str) -> set[str]:
    """The keys whose values `template` is built from, through the interpolations of theirs
    (`${paths.log_dir}` -> paths.log_dir, paths.root_dir)."""
    keys: set[str] = set()
    texts = [template]
    while texts:
        for key in KEY_REFERENCE.findall(texts.pop()):
            if key in keys or key.startswith("."):  # a relative one: not a key of the root
                continue
            keys.add(key)
            parent, _, last = key.rpartition(".")
            node = OmegaConf.select(config, parent, throw_on_resolution_failure=False)
            node = config if not parent else node
            if isinstance(node, DictConfig) and last in node:
                texts.append(str(OmegaConf.to_container(node, resolve=False)[last]))
    return keys


def names_it(override: Override, keys: set[str]) -> bool:
    """Whether the swept key of `override` is one of `keys`, holds one or lies inside one."""
    key = override.key_or_group
    return any(k == key or k.startswith(f"{key}.") or key.startswith(f"{k}.") for k in keys)


def job_folder(job: DictConfig, template: str, config: DictConfig) -> str | None:
    """`template` resolved with a job's composed config (with its hydra node), as Hydra resolves
    hydra.sweep.dir in the job: `${now:...}` as the sweep resolved it (Hydra copies its cache
    to each job), `${hydra:runtime.choices.<group>}` as the job's choice. None where it cannot
    be resolved here: the job says why."""
    try:
        with read_write(job):
            job.hydra.sweep.dir = template.replace("${hydra:", "${hydra.")
        OmegaConf.copy_cache(from_config=config, to_config=job)
        return str(job.hydra.sweep.dir)
    except Exception:  # a resolver or key only a job has: its own message then
        return None
