"""A `Source` subclass's own constructor arguments, for the token cache's fingerprint.

A subclass that inherits `settings()` (`LowerText(TextFilesSource)` with a `lowercase`
argument) would otherwise share the cache of its other argument values. The fingerprint adds
the arguments that inherited `settings()` cannot know of, as given (`Source.__new__` keeps
them), in a form that is the same on every run.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from lmtrain.data.corpus import Source
from lmtrain.data.hf_local import plain
from lmtrain.errors import LMTrainError

VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
PLAIN = (str, int, float, bool, type(None))


def unsettled_arguments(source: Source) -> dict[str, Any]:
    """The constructor arguments of `source` that the `settings()` its class inherits cannot
    cover, as given (defaults filled in); {} for a class that defines `settings()`.

    `LowerText(TextFilesSource)` with a `lowercase` argument inherits `settings()`, which knows
    nothing of it, and would reuse the cache of the other setting. The arguments of the class that
    defines `settings()` are its author's to cover, or to leave out on purpose (a download folder,
    a timeout, `streaming`: how documents are read, not which), so they are not added here.
    """
    cls = type(source)
    owner = next(c for c in cls.__mro__ if "settings" in vars(c))
    if owner is cls:
        return {}
    covered = set(inspect.signature(owner.__init__).parameters) | set(source.settings())
    signature = inspect.signature(cls.__init__)
    args, kwargs = source._given
    try:
        bound = signature.bind(source, *args, **kwargs)
    except TypeError:  # made without its arguments (a custom __new__): their values are unknown
        params = list(signature.parameters.values())[1:]
        names = [p.name for p in params if p.kind not in VARIADIC and p.name not in covered]
        if names:
            raise LMTrainError(
                f"{cls.__qualname__} takes {', '.join(names)}, which the settings() it inherits "
                f"does not cover: define {cls.__qualname__}.settings(), returning them all"
            ) from None
        return {}
    bound.apply_defaults()
    given: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # not self
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            given.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL or value:
            given[name] = value
    return {
        name: stable(plain(value), f"{cls.__qualname__}({name}=...)", cls.__qualname__)
        for name, value in given.items()
        if name not in covered
    }


def stable(value: Any, where: str, owner: str) -> Any:
    """`value` as the same JSON on every run: functions and classes by their import path; an
    object whose text shows its memory address (`<Cleaner object at 0x7f...>`, a new cache on
    every run) is refused."""
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, Mapping):
        return {str(k): stable(v, where, owner) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [stable(v, where, owner) for v in value]
    if callable(value) and hasattr(value, "__qualname__"):
        owner_class = getattr(value, "__objclass__", str)  # `str.lower` has no module of its own
        module = getattr(value, "__module__", None) or owner_class.__module__
        return f"{module}.{value.__qualname__}"
    if " at 0x" in repr(value):
        raise LMTrainError(
            f"{where} is {value!r}, which reads differently on every run, so the token cache "
            f"would be rebuilt each time: define {owner}.settings() returning a plain value "
            "(text, number, list) that stands for it"
        )
    return str(value)
