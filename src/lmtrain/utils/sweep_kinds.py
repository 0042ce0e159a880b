"""Which kinds of sweep (`a,b`/choice(), range(), glob(), interval()) the sweeper in use takes,
and whether a glob() names any option, checked before any job
(`lmtrain.utils.sweep_checks.refuse_sweep_that_cannot_start`).

Hydra's basic sweeper (a grid) lists every value, so an interval() (which has none to list)
ended in its traceback "BasicSweeper does not support sweep type : INTERVAL_SWEEP" with the
sweep's folder made; the Optuna sweeper asserts that a choice is a choice(), so a glob()
ended in a bare AssertionError; and a glob() that matched no option of its group (or a glob
of a key that is no group) launched no job and exited 0, leaving an empty sweep folder that
`make report` then took for the newest sweep (red team sweep28).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omegaconf import DictConfig

from lmtrain.errors import LMTrainError
from lmtrain.utils.sweep_overrides import parsed_sweeps

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override


def sweeper_kind(sweeper: DictConfig) -> str:
    """ "optuna", "basic" (Hydra's grid) or "other", from the sweeper's `_target_`."""
    target = str(sweeper.get("_target_", ""))
    if "optuna" in target.lower():
        return "optuna"
    return "basic" if target.endswith("BasicSweeper") else "other"


def refuse_sweep_kinds_the_sweeper_lacks(sweeper: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError for an interval() under the basic sweeper, or a glob() under the
    Optuna sweeper (`overrides`: "key=value" -> where it comes from, as sweep_checks collects
    them), each a traceback from inside the sweeper once its folder was made."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    kind = sweeper_kind(sweeper)
    for override, shown in parsed_sweeps(overrides):
        value = override.value()
        if kind == "basic" and isinstance(value, IntervalSweep):
            raise LMTrainError(
                f"{shown} needs hparams_search=optuna (a search that samples the interval; "
                "Hydra's basic sweeper runs a grid and has no values to list): for a grid give "
                "a comma list (1e-4,3e-4,1e-3) or range(start, stop, step)"
            )
        if kind == "optuna" and isinstance(value, Glob):
            options = glob_options(override)
            listed = f"choice({', '.join(options)})" if options else "choice(a, b, ...)"
            raise LMTrainError(
                f"the search space {shown} is a glob(), which the Optuna sweeper cannot search "
                f"(it takes choice(), range() and interval()): list the options with {listed}"
                + group_options_hint(override)
            )


def refuse_globs_without_options(overrides: dict[str, str]) -> None:
    """Raise LMTrainError for a glob() that names no option, expanded as Hydra's sweepers
    expand it (the group's options through `Glob.filter`): the basic sweeper launched no job
    and exited 0, as for a `range()` of no values."""
    from hydra.core.override_parser.types import Glob

    for override, shown in parsed_sweeps(overrides):
        if not isinstance(override.value(), Glob) or glob_options(override):
            continue
        if not group_options(override.key_or_group):
            raise LMTrainError(
                f"the sweep {shown} matches nothing: {override.key_or_group} is not a config "
                "group, and glob() picks among a group's options: give a comma list of values "
                "or range(start, stop, step)"
            )
        raise LMTrainError(
            f"the sweep {shown} matches no option, so it would run no job: give a pattern "
            "that matches one, or list them with a comma" + group_options_hint(override)
        )


def group_options(group: str) -> list[str]:
    """The options of config group `group` (none if it is no group), as Hydra lists them for a
    glob(): from the config loader that composed this run, searchpath included."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    hydra = GlobalHydra.instance()
    if not hydra.is_initialized():
        return []
    return list(hydra.config_loader().get_group_options(group, results_filter=ObjectType.CONFIG))


def glob_options(override: Override) -> list[str]:
    """The options the glob() of `override` matches, in the group's order (Hydra's filter)."""
    return list(override.value().filter(group_options(override.key_or_group)))  # type: ignore[union-attr]


def group_options_hint(override: Override) -> str:
    """ " (<group> has a, b, c)", or "" for a key that is no config group."""
    options = group_options(override.key_or_group)
    return f" ({override.key_or_group} has {', '.join(options)})" if options else ""
