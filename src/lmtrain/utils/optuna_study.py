"""Whether an Optuna search can go on with the study its storage already holds.

With `hydra.sweeper.storage` set, a search of a `study_name` that is already there continues that
study (the sweeper's `load_if_exists=True`). Optuna refuses two changes, each with a traceback
from inside the sweeper: another direction ("Cannot overwrite study direction"), at once, and a
parameter searched as another kind of distribution ("Cannot set different distribution kind",
"CategoricalDistribution does not support dynamic value space"), at the first trial, with its
job folder half made. `refuse_study_that_cannot_continue` finds both before any trial, with
Optuna's own compatibility check, and says what to pass instead. A storage that cannot be
opened (an SQLite file in a missing folder, or not a database; an unknown URL scheme) is one line
too, found without creating or changing any file (`refuse_unusable_storage`).

`refuse_intervals_on_a_grid`: the grid sampler takes only listed values, and the plugin made a
grid of an int interval without its top value, and traced back on a float one.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError, first_line

if TYPE_CHECKING:
    from hydra.core.override_parser.types import IntervalSweep, Override

# What to do about a storage that cannot be used.
NEW_STORAGE = (
    "pass sqlite:///<file in an existing folder> (a new file starts a new study), or "
    "hydra.sweeper.storage=null to keep the study in memory"
)


def refuse_study_that_cannot_continue(sweeper: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError when the study named `hydra.sweeper.study_name` in the storage has
    another direction, or searched a parameter of `overrides` (the search space as
    `sweep_checks` collects it: "key=value" -> where it comes from) as another distribution.
    A storage that holds no such study is left to the sweeper, which creates it; one that
    cannot be opened is refused (`refuse_unusable_storage`)."""
    try:
        # enum_to_str: the schema default direction, Direction.minimize, by its name
        settings: Any = OmegaConf.to_container(sweeper, resolve=True, enum_to_str=True)
    except Exception:  # an interpolation only a job can resolve: the sweeper's own message
        return
    storage, name = settings.get("storage"), settings.get("study_name")
    if isinstance(storage, str) and storage:
        refuse_unusable_storage(storage)
    if not storage or not name or not study_file_exists(str(storage)):
        return
    import optuna

    try:
        study = optuna.load_study(study_name=str(name), storage=str(storage))
    except KeyError:  # no study of that name yet: the sweeper creates it
        return
    except Exception as err:  # the sweeper's create_study traced back on the same
        raise LMTrainError(
            f"hydra.sweeper.storage={without_password(storage)} cannot be used "
            f"({type(err).__name__}: {first_line(err)}): {NEW_STORAGE}"
        ) from None
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


def refuse_unusable_storage(storage: str) -> None:
    """Raise LMTrainError for a `hydra.sweeper.storage` that Optuna cannot open: SQLAlchemy's
    traceback came from inside the sweeper once the sweep's folder was made. Nothing is
    created or written: an SQLite file is read (its header, then its tables, read-only), so
    that a user's text file or other database is never made an Optuna study's."""
    if storage.startswith("redis"):  # Optuna's RedisStorage: its own message
        return
    import sqlalchemy

    try:  # parses the URL and imports its driver; connects to nothing
        url = sqlalchemy.engine.make_url(storage)
        sqlalchemy.create_engine(url).dispose()
    except Exception as err:
        # A server's driver not installed (psycopg2 for postgresql://): install it, not sqlite.
        fix = f"install {err.name}" if isinstance(err, ImportError) and err.name else NEW_STORAGE
        raise LMTrainError(
            f"hydra.sweeper.storage={without_password(storage)} cannot be used "
            f"({type(err).__name__}: {first_line(err)}): {fix}"
        ) from None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    problem = sqlite_file_problem(Path(url.database))
    if problem is not None:
        what, fix = problem
        raise LMTrainError(f"hydra.sweeper.storage={storage} cannot be used ({what}): {fix}")


def without_password(storage: str) -> str:
    """`storage` with a server URL's password masked (`postgresql://u:***@host/db`), as
    SQLAlchemy shows a URL, for an error line; the text as given when it is no URL."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: nothing it would take as a password
        return storage


def sqlite_file_problem(path: Path) -> tuple[str, str] | None:
    """Why Optuna cannot keep a study in the SQLite file `path`, and what to do instead; None
    when it can (a new file in a writable folder, an empty file, an Optuna database)."""
    new_file = "pass a new file name for the study, or an earlier study's file"
    if path.is_dir():
        return f"{path} is a folder", f"pass a file in it, e.g. sqlite:///{path / 'optuna.db'}"
    if not path.parent.is_dir():
        return f"the folder {path.parent} does not exist", f"create it, or {NEW_STORAGE}"
    if not path.exists():
        writable = os.access(path.parent, os.W_OK | os.X_OK)
        return None if writable else (f"the folder {path.parent} is not writable", NEW_STORAGE)
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError as err:
        return f"{path} cannot be read: {err.strerror}", new_file
    if not head:
        return None
    if head != b"SQLite format 3\x00":
        return f"{path} is not an SQLite database; it is left as it is", new_file
    if not os.access(path, os.W_OK):
        return f"{path} is read-only, and a study writes its trials there", new_file
    try:
        uri = f"{path.resolve().as_uri()}?mode=ro"  # read-only: nothing written, or created
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = sorted(str(row[0]) for row in rows)
    except sqlite3.Error:  # Optuna's own open (load_study) says what it makes of it
        return None
    if tables and "studies" not in tables:
        shown = ", ".join(tables[:3])
        return (
            f"{path} is another program's database (tables {shown}), which Optuna would add to",
            new_file,
        )
    return None


def refuse_intervals_on_a_grid(sweeper: DictConfig, overrides: dict[str, str]) -> None:
    """Raise LMTrainError for an interval() searched with the grid sampler, which tries only
    listed values: the plugin listed an int interval's values with Python's range, leaving out
    the top one without a word (int(interval(0, 2)) tried 0 and 1), and traced back on a float
    one ("GridSampler only supports discrete distributions")."""
    from hydra.core.override_parser.types import IntervalSweep

    target = OmegaConf.select(sweeper, "sampler._target_", default=None)
    if not str(target or "").endswith("GridSampler"):
        return
    for key, (override, shown) in searched(overrides).items():
        value = override.value()
        if not isinstance(value, IntervalSweep):
            continue
        whole = isinstance(value.start, int) and isinstance(value.end, int)
        why = (
            f"the plugin leaves out its top value, {value.end}"
            if whole
            else "Optuna's GridSampler takes no continuous range"
        )
        raise LMTrainError(
            f"the search space {shown} is an interval, and the grid sampler "
            f"(hydra/sweeper/sampler=grid) tries only listed values ({why}): list the values to "
            f"try, e.g. {key}=choice({', '.join(grid_values(value))})"
        )


def grid_values(value: IntervalSweep) -> list[str]:
    """The values of an interval to suggest for a grid: every integer of a short int interval,
    else 5 points from low to high, evenly spaced (on a log scale with the `log` tag)."""
    low, high = value.start, value.end
    whole = isinstance(low, int) and isinstance(high, int)
    if whole and int(high) - int(low) < 12:  # type: ignore[arg-type]
        return [str(v) for v in range(int(low), int(high) + 1)]  # type: ignore[arg-type]
    a, b = float(low), float(high)  # type: ignore[arg-type]
    log = "log" in (value.tags or ()) and a > 0 and b > 0
    a, b = (math.log(a), math.log(b)) if log else (a, b)
    points = [a + (b - a) * i / 4 for i in range(5)]
    points = [math.exp(p) for p in points] if log else points
    if whole:
        return list(dict.fromkeys(str(round(p)) for p in points))
    shown = [f"{p:.3g}" for p in points]
    return [v if any(c in v for c in ".en") else f"{v}.0" for v in dict.fromkeys(shown)]


def searched(overrides: dict[str, str]) -> dict[str, tuple[Override, str]]:
    """The sweep overrides the sweeper searches, by parameter name, each with the text an
    error shows: later lines win, and a key given one fixed value anywhere leaves the space
    (as the plugin's `create_params_from_overrides`); lines Hydra cannot parse are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    space: dict[str, tuple[Override, str]] = {}
    fixed = set()
    for line, source in overrides.items():
        try:
            (override,) = OverridesParser.create().parse_overrides([line])
        except HydraException:
            continue
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.add(key)
            continue
        space[key] = (override, f"{source}={line.split('=', 1)[1]}" if source else line)
    return {key: found for key, found in space.items() if key not in fixed}


def search_space(overrides: dict[str, str]) -> dict[str, Any]:
    """The Optuna distributions the sweeper builds from `overrides`, by parameter name, as it
    builds them: later lines win, and a key given one fixed value leaves the space."""
    try:  # the plugin's own builder (private, so guarded), as in sweep_checks
        from hydra_plugins.hydra_optuna_sweeper._impl import (
            create_optuna_distribution_from_override,
        )
    except ImportError:
        return {}
    space: dict[str, Any] = {}
    for key, (override, _) in searched(overrides).items():
        try:
            space[key] = create_optuna_distribution_from_override(override)
        except (ValueError, TypeError, NotImplementedError):
            continue  # refused by the other checks, or the sweeper's own message
    return space
