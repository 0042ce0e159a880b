"""Check settings before work starts, and report every problem at once.

A run that fails on its third bad value after fixing two, each after minutes of data preparation,
wastes a researcher's afternoon; litgpt's `validate_args` reports them all up front, and so does
this. Each check takes the setting's full key (as typed on the command line) and its value, and
records one problem naming both and what to pass instead; `raise_if_any` ends with one line.
Values come from Hydra overrides, so a number may arrive as a string ("abc", "1e-3").
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lmtrain.errors import LMTrainError


class Problems:
    """Collects problems with settings; `raise_if_any` reports them all as one LMTrainError."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def add(self, message: str) -> None:
        self.found.append(message)

    def extend(self, messages: Iterable[str]) -> None:
        self.found.extend(messages)

    def unknown_arguments(
        self, key: str, given: Iterable[str], accepted: Iterable[str], owner: str
    ) -> None:
        """Each of `given` (the keys under `key`) that `owner` does not take, with the name
        it most likely meant."""
        accepted = sorted(accepted)
        for extra in (k for k in given if k not in accepted):
            close = difflib.get_close_matches(extra, accepted, n=1)
            advice = f"did you mean {close[0]}?" if close else f"drop it with ~{key}.{extra}"
            self.add(f"{key}.{extra} is not an argument of {owner}: {advice}")

    def raise_if_any(self) -> None:
        if len(self.found) == 1:
            raise LMTrainError(self.found[0])
        if self.found:
            numbered = "; ".join(f"({i}) {m}" for i, m in enumerate(self.found, 1))
            raise LMTrainError(f"{len(self.found)} settings need a change: {numbered}")

    # -- typed checks: each returns whether the value passed ----------------------------------
    def integer(
        self,
        key: str,
        value: Any,
        minimum: int | None = None,
        optional: bool = False,
        maximum: int | None = None,
    ) -> bool:
        """An int (not a bool, not a float) in [minimum, maximum] (either end may be open);
        None passes if `optional`."""
        if value is None and optional:
            return True
        if maximum is None:
            wanted = "a whole number" + ("" if minimum is None else f" of at least {minimum}")
        elif minimum is None:
            wanted = f"a whole number of at most {maximum}"
        else:
            wanted = f"a whole number from {minimum} to {maximum}"
        wanted += ", or null" if optional else ""
        if isinstance(value, bool) or not isinstance(value, int):
            text = text_hint(key, value, int)
            self.add(f"{key}={value!r} is not a whole number: pass {wanted}{text}")
            return False
        if minimum is not None and value < minimum:
            self.add(f"{key}={value!r} must be at least {minimum}: pass {wanted}")
            return False
        if maximum is not None and value > maximum:
            self.add(f"{key}={value!r} must be at most {maximum}: pass {wanted}")
            return False
        return True

    def number(
        self,
        key: str,
        value: Any,
        low: float | None = None,
        high: float | None = None,
        low_open: bool = False,
        high_open: bool = False,
        optional: bool = False,
        hint: str = "",
    ) -> bool:
        """A finite int or float in [low, high] (an end excluded when `*_open`); `hint` follows
        the advice (", or greedy=true")."""
        if value is None and optional:
            return True
        if low == 0 and low_open and high is None:
            span, wanted = "positive", "a positive number"
        else:
            lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
            hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
            span = f"in {lo}, {hi}"
            wanted = f"a number {span}"
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value):
            text = text_hint(key, value, float)
            self.add(f"{key}={value!r} is not a finite number: pass {wanted}{hint}{text}")
            return False
        too_low = low is not None and (value <= low if low_open else value < low)
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            self.add(f"{key}={value!r} must be {span}: pass {wanted}{hint}")
            return False
        return True

    def boolean(self, key: str, value: Any) -> bool:
        """A real true or false (see `strict_bool`)."""
        try:
            strict_bool(key, value)
        except LMTrainError as err:
            self.add(str(err))
            return False
        return True

    def choice(self, key: str, value: Any, choices: Iterable[Any]) -> bool:
        choices = list(choices)
        if value in choices:
            return True
        self.add(f"{key}={value!r} is unknown: use one of {', '.join(map(str, choices))}")
        return False


def text_hint(key: str, value: Any, kind: type[int] | type[float]) -> str:
    """What to add when `value` is a number written as text: `${oc.env:SEED}` resolves to the
    string '42' (environment variables are text), which only `${oc.decode:...}` reads as a
    number. Empty when `value` does not read as a (finite) `kind`."""
    if not isinstance(value, str):
        return ""
    try:
        number = kind(value.strip())
    except ValueError:
        return ""
    if not math.isfinite(number):
        return ""
    key = re.sub(r"\[(\d+)\]", r".\1", key)  # betas[0]: Hydra's override spells it betas.0
    decoded = f'{key}="${{oc.decode:${{oc.env:<VAR>}}}}"'  # unquoted, Hydra's grammar refuses it
    return f" (it is text, as from ${{oc.env:...}}: pass '{decoded}', or {key}={value.strip()})"


def strict_bool(key: str, value: Any) -> bool:
    """`value` when it is a real bool, else one LMTrainError naming `key`.

    Hydra turns `key=true`/`key=false` (any case) into bools, but `key=no`, `key=maybe`, `key=0`
    or `key="true"` arrive as strings or numbers, and `bool("no")` is True: a yes/no setting that
    guards a run's files (overwrite_run, overwrite) must not read "no" as yes, nor may one that
    changes what trains (model.freeze.embeddings=no froze the embeddings). So only a bool
    passes; strings, numbers and null are refused.
    """
    if isinstance(value, bool):
        return value
    raise LMTrainError(f"{key}={value!r} is not true or false: pass {key}=true or {key}=false")


def accepted_arguments(target: Callable[..., Any]) -> set[str] | None:
    """The keyword arguments `target(...)` takes: a function's parameters; a class's
    constructor's and, where it passes `**kwargs` on, its bases' (StepScheduledCheckpoint's
    reach ModelCheckpoint's). None: anything, a chain that ends in `**kwargs`."""
    parameters, closed = call_parameters(target)
    return {p.name for p in parameters} if closed else None


def call_parameters(target: Callable[..., Any]) -> tuple[list[inspect.Parameter], bool]:
    """The named parameters of `target(...)`, along a class's constructors while each passes
    `**kwargs` on, and whether that chain ends (False: in `**kwargs`, or at a builtin without
    a signature, so more may be taken)."""
    if inspect.isclass(target):
        calls = [vars(k)["__init__"] for k in inspect.getmro(target) if "__init__" in vars(k)]
    else:
        calls = [target]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    found: list[inspect.Parameter] = []
    for call in calls:
        try:
            parameters = inspect.signature(call).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: cannot tell
            return found, False
        found += [p for p in parameters if p.kind not in variadic and p.name != "self"]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return found, True
    return found, False


def setting_text(key: str, value: Any, what: str, required: bool = False) -> str | None:
    """A setting that names something (a path, a folder, a split, a column) as text: a number as
    the text it was typed as, a path object as its text, None as None (refused if `required`);
    a list, a mapping or true/false is one LMTrainError naming `key` and `what` it takes.

    Hydra reads `data.source.path=2024` (a folder named 2024) as the int 2024, and each use of
    it as text failed in its own way (a TypeError, an AttributeError deep in a library); a dict
    was iterated as its keys, silently. Read once, where the setting is taken, every later use
    sees text.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | os.PathLike) and not isinstance(value, bool):
        return str(value)
    if value is None and not required:
        return None
    if value is None:
        raise LMTrainError(f"{key}=None names nothing: pass {what}")
    if isinstance(value, bool):
        kind = "true or false"
        hint = f" (quote a name that reads as one: '{key}=\"{str(value).lower()}\"')"
    else:
        kinds = ((Mapping, "a mapping"), (Sequence, "a list"))
        kind = next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)
        hint = ""
    raise LMTrainError(f"{key}={value!r} is {kind}, not text: pass {what}{hint}")


def names_local_path(value: str) -> bool:
    """Whether a model or tokenizer name is meant as a local path: it starts with `.`, `/` or
    `~`, which no Hugging Face hub id does (`gpt2` may still be a folder; callers check that)."""
    return value.startswith((".", "/", "~"))


def check_task_name(task_name: Any, problems: Problems) -> None:
    """A folder name under paths.log_dir, as the run folder and its log file take it: with
    `../../x` both were made outside it. The Hydra callbacks check it in on_run_start, before
    Hydra makes the folder; the config checks again for runs made without Hydra's CLI."""
    if isinstance(task_name, (int, float)) and not isinstance(task_name, bool):
        problems.add(  # Hydra read `task_name=2024` as a number: as text it is a fine name
            f"task_name={task_name!r} is a number, not text: quote it, \"task_name='{task_name}'\""
        )
        return
    name = task_name if isinstance(task_name, str) else ""
    if any(bad in name for bad in ("/", "\\", "\0")):
        problems.add(
            f"task_name={task_name!r} is not a folder name: pass a name without '/' or '\\'"
        )
    elif not name.strip(". "):  # empty, dots or spaces only, or not text
        problems.add(
            f"task_name={task_name!r} is not a folder name: pass a plain name of letters or "
            "digits, such as train"
        )


# Keys that name the run to continue: an empty one (`resume=$RUN`, the variable unset) read as
# none, and trained a new run.
RUN_REFERENCES = (("resume", "<run folder> or latest"), ("ckpt_path", "<.ckpt> or last"))


def check_run_references(config: Any, problems: Problems) -> None:
    """`resume` and `ckpt_path` are left out or name something (`config`: a DictConfig; a value
    that does not resolve is the config checks' to name)."""
    from omegaconf import OmegaConf

    for key, value in RUN_REFERENCES:
        given = OmegaConf.select(config, key, throw_on_resolution_failure=False)
        if isinstance(given, str) and not given.strip():
            problems.add(f"{key}={given!r} is empty: pass {key}={value}, or leave it out")


# Hydra's run and sweep folders (configs/hydra/default.yaml) are built from these keys: with one
# removed (`~task_name`, `~paths`), Hydra's first read of hydra.run.dir, inside its own code, was
# an InterpolationKeyError traceback of a hundred lines.
RUN_FOLDER_KEYS = (
    ("task_name", "the key the run folder's name is built from", "task_name=<name>"),
    ("paths", "paths.log_dir, the folder run folders go under", "paths=default"),
)


def refuse_bad_task_name(config: Any) -> None:
    """Raise LMTrainError for a `task_name` that is not a folder name (see check_task_name), or
    a key the run folder is built from that the config lacks (RUN_FOLDER_KEYS)."""
    problems = Problems()
    names = set(config)  # not `key in config`: a DictConfig reads a `???` value as absent
    for key, what, instead in RUN_FOLDER_KEYS:
        if key not in names:
            problems.add(f"~{key} removes {what}: pass {instead} instead")
    if "task_name" in names:
        check_task_name(config.get("task_name"), problems)
    problems.raise_if_any()
