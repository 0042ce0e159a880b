"""Whether an Optuna search can go on with the study its storage already holds.

With `hydra.sweeper.storage` set, a search of a `study_name` that is already there continues that
study (the sweeper's `load_if_exists=True`). Optuna refuses two changes, each with a traceback
from inside the sweeper: another direction ("Cannot overwrite study direction"), at once, and a
parameter searched as another kind of distribution ("Cannot set different distribution kind",
"CategoricalDistribution does not support dynamic value space"), at the first trial, with its
job folder half made. `refuse_study_that_cannot_continue` finds both before any trial, with
Optuna's own compatibility check, and says what to pass instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError, first_line


def refuse_study_that_cannot_continue(sweeper: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError when the study named `hydra.sweeper.study_name` in the storage has
    another direction, or searched a parameter of `overrides` (the search space as
    `sweep_checks` collects it: "key=value" -> where it comes from) as another distribution.
    A storage that holds no such study, or that cannot be read, is left to the sweeper."""
    try:
        settings: Any = OmegaConf.to_container(sweeper, resolve=True)
    except Exception:  # an interpolation only a job can resolve: the sweeper's own message
        return
    storage, name = settings.get("storage"), settings.get("study_name")
    if not storage or not name or not study_file_exists(str(storage)):
        return
    import optuna

    try:
        study = optuna.load_study(study_name=str(name), storage=str(storage))
    except Exception:  # no study of that name yet, or a storage Optuna cannot open
        return
    shown = f"study {name!r} in hydra.sweeper.storage={storage}"
    asked = settings.get("direction") or "minimize"
    asked = [str(d).lower() for d in (asked if isinstance(asked, list) else [asked])]
    held = [direction.name.lower() for direction in study.directions]
    if asked != held:
        keep = held[0] if len(held) == 1 else f"[{','.join(held)}]"
        raise LMTrainError(
            f"the {shown} {'/'.join(held)}s, and this search asks it to {'/'.join(asked)}, which "
            f"Optuna cannot change: pass hydra.sweeper.direction={keep} to go on with it, or "
            "another hydra.sweeper.study_name for a new study"
        )
    space = search_space(overrides)
    try:
        trials = study.get_trials(deepcopy=False)
    except Exception as err:  # a damaged row: Optuna's traceback came from inside the sweeper
        raise LMTrainError(
            f"the {shown} cannot be read ({type(err).__name__}: {first_line(err)}): pass another "
            "hydra.sweeper.study_name or hydra.sweeper.storage for a new study"
        ) from None
    for trial in trials:
        for key, before in trial.distributions.items():
            if key not in space:
                continue
            try:
                optuna.distributions.check_distribution_compatibility(before, space[key])
            except ValueError as err:
                raise LMTrainError(
                    f"the {shown} searched {key} as {before}, and this search asks for "
                    f"{space[key]}, which Optuna cannot continue ({first_line(err).rstrip('.')}):"
                    f" search {key} as before, or pass another hydra.sweeper.study_name for a "
                    "new study"
                ) from None


def study_file_exists(storage: str) -> bool:
    """False for an SQLite file not made yet (a new study: nothing to check, and opening it
    would create it); True for any other storage (a server), which Optuna opens."""
    if not storage.startswith("sqlite:///"):
        return True
    return Path(storage.removeprefix("sqlite:///")).is_file()


def search_space(overrides: dict[str, str]) -> dict[str, Any]:
    """The Optuna distributions the sweeper builds from `overrides`, by parameter name, as it
    builds them: later lines win, and a key given one fixed value leaves the space."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:  # the plugin's own builder (private, so guarded), as in sweep_checks
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )
    except ImportError:
        return {}
    space: dict[str, Any] = {}
    fixed = set()
    for line in overrides:
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
            if not override.is_sweep_override():
                fixed.add(override.get_key_element())
                continue
            space[override.get_key_element()] = create_optuna_distribution_from_override(override)
        except (HydraException, ValueError, TypeError, NotImplementedError):
            continue  # refused by the other checks, or the sweeper's own message
    return {key: value for key, value in space.items() if key not in fixed}
