"""Checks of lm-eval tasks that lm-eval makes late or not at all (`lmtrain.benchmarks` calls them).

lm-eval finds a `num_fewshot` larger than a task's few-shot documents only while it builds the
prompts, after our val split has run; it skips a task YAML that does not parse while it indexes
include_path, so the task reads as unknown; it raises a `!function` that cannot be imported as a
traceback; and the lm-eval keys are ignored when `tasks` names none.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError, find_cause, first_line

log = logging.getLogger(__name__)

# configs/eval.yaml's values of the lm-eval keys: with tasks=[] any other value does nothing.
LM_EVAL_DEFAULTS: dict[str, Any] = {
    "num_fewshot": None,
    "limit": None,
    "batch_size": 1,
    "max_length": None,
    "include_path": None,
}
# Folders lm-eval's task index does not read (lm_eval/tasks/_index.py).
SKIPPED_FOLDERS = {"__pycache__", ".ipynb_checkpoints"}
# Where lm-eval draws few-shot examples; a ValueError or AssertionError raised under it means a
# task had fewer few-shot documents than asked for.
SAMPLERS_FILE = str(Path("lm_eval", "api", "samplers.py"))


def warn_unused_lm_eval_keys(cfg: DictConfig) -> None:
    """One warning naming the lm-eval keys set to something other than their default while
    `tasks` names none: a user who set num_fewshot=5 alone would otherwise think it ran."""
    changed = [
        f"{key}={cfg.get(key, default)}"
        for key, default in LM_EVAL_DEFAULTS.items()
        if cfg.get(key, default) != default
    ]
    if changed:
        verb, pronoun = ("has", "it") if len(changed) == 1 else ("have", "them")
        log.warning(
            "%s %s no effect without tasks=: name lm-eval tasks (tasks=[hellaswag]) to use %s, "
            "or leave %s out",
            ", ".join(changed),
            verb,
            pronoun,
            pronoun,
        )


def check_fewshot_pools(tasks: dict[str, Any], num_fewshot: int | None) -> None:
    """One line when a task would be asked for more few-shot examples than it can draw.

    `num_fewshot` is the user's (None: each task's own, from its YAML); lm-eval draws the
    examples from `fewshot_pool`, and raises ValueError only once it builds the prompts.
    """
    short = []
    most = None
    for name, task in tasks.items():
        shots = fewshot_count(task, num_fewshot)
        pool = fewshot_pool(task) if shots > 0 else None
        if pool is None:
            continue
        size, source, reserved = pool
        allowed = max(size - reserved, 0)
        if shots > allowed:
            less = ", less the document being evaluated" if reserved else ""
            short.append(f"{name} asks for {shots}, from the {size} documents of {source}{less}")
            most = allowed if most is None else min(most, allowed)
    if not short:
        return
    asked = "the num_fewshot in task YAMLs" if num_fewshot is None else f"num_fewshot={num_fewshot}"
    fix = f"num_fewshot={most} or less" if most else "num_fewshot=0"
    overrides = " (it overrides a YAML's own)" if num_fewshot is None else ""
    raise LMTrainError(
        f"{asked} is more than a task has few-shot documents for ({'; '.join(short)}): pass "
        f"{fix}{overrides}, or give the task a larger fewshot_split in its YAML"
    )


def fewshot_count(task: Any, num_fewshot: int | None) -> int:
    """The examples lm-eval's simple_evaluate puts in `task`'s prompts: `num_fewshot`, unless the
    task's YAML sets 0 (lm-eval keeps that); without it the YAML's count, or 0."""
    own = task.get_config("num_fewshot")
    if num_fewshot is not None and own != 0:
        return num_fewshot
    return own or 0


def fewshot_pool(task: Any) -> tuple[int, str, int] | None:
    """How many documents `task` draws few-shot examples from, where from, and how many of them
    lm-eval holds back; None for a task whose sampler we do not know (its own rules).

    As in lm-eval's ConfigurableTask: the fewshot split, else `fewshot_config.samples`, else the
    training, validation or test split. When the fewshot split is the test split (also both
    unset: a task without a test split) fewshot_context passes the evaluated document to the
    sampler to leave out: the default sampler then draws one document more, first_n leaves it
    out of its pool when the pool is the split being evaluated.
    """
    from lm_eval.api.samplers import ContextSampler, FirstNSampler

    sampler, fewshot = getattr(task, "sampler", None), getattr(task, "fewshot_cfg", None)
    if sampler is None or fewshot is None or type(sampler) not in (ContextSampler, FirstNSampler):
        return None
    config = task.config
    if fewshot.split is not None:
        split = fewshot.split
    elif fewshot.samples is not None:
        split = None
    elif task.has_training_docs():
        split = config.training_split
    elif task.has_validation_docs():
        split = config.validation_split
    else:
        split = config.test_split
    source = "its fewshot_config samples" if split is None else f"its {split} split"
    passes_eval_doc = fewshot.split == config.test_split
    eval_split = config.test_split if task.has_test_docs() else config.validation_split
    if not passes_eval_doc:
        reserved = 0
    elif type(sampler) is FirstNSampler:
        reserved = int(split == eval_split)
    else:
        reserved = 1
    return len(sampler.fewshot_docs()), source, reserved


def fewshot_sampling_failed(err: BaseException) -> bool:
    """Whether lm-eval's few-shot sampler raised `err` (too few documents to draw from, after
    the copies of the evaluated document were left out)."""
    if not isinstance(err, ValueError | AssertionError) or err.__traceback__ is None:
        return False
    return any(
        frame.filename.endswith(SAMPLERS_FILE) for frame in traceback.extract_tb(err.__traceback__)
    )


def task_yaml_error(
    name: str, err: Exception, index: dict[str, Any], include_path: str | None
) -> LMTrainError | None:
    """One line for `err`, raised while lm-eval loaded task `name`, when its task YAML caused
    it: a `!function` (or a module it imports) that cannot be imported, or any error of a YAML
    in include_path (the user's own). None: lm-eval's or our bug, which keeps its traceback.

    `index` is the TaskManager's task index (name to entry with the YAML's path).
    """
    entry = index.get(name)
    yaml_path = getattr(entry, "yaml_path", None)
    imported = find_cause(err, ImportError)
    own = (
        include_path is not None
        and yaml_path is not None
        and Path(yaml_path).resolve().is_relative_to(Path(include_path).resolve())
    )
    if imported is None and not own:
        return None
    cause = imported or err
    where = f"its task YAML {yaml_path}" if yaml_path else "a task YAML it names"
    fix = (
        "fix the !function it names (module.function, where the module is a .py file next to "
        "the YAML or an installed package), or install what that module imports"
        if imported is not None
        else "fix the YAML"
    )
    return LMTrainError(
        f"tasks={name}: {where} cannot be loaded ({type(cause).__name__}: {first_line(cause)}): "
        f"{fix}"
    )


class TagIgnoringLoader(yaml.SafeLoader):
    """A safe YAML loader that reads lm-eval's `!function` (and any unknown tag) as null: only
    whether a file parses matters, and nothing it names is imported."""


TagIgnoringLoader.add_constructor(None, lambda loader, node: None)


def unparsable_yamls_note(include_path: str | None) -> str:
    """', and include_path holds YAMLs lm-eval skipped, ... (<file> (<message>); ...)' naming
    the YAMLs under `include_path` that do not parse, for the unknown-task line; '' if none."""
    broken = [] if include_path is None else unparsable_yamls(include_path)
    if not broken:
        return ""
    files = "; ".join(broken)
    return f", and include_path holds YAMLs lm-eval skipped, as they do not parse ({files})"


def unparsable_yamls(include_path: str) -> list[str]:
    """'<file> (<parser's message>)' for each YAML under include_path that does not parse.

    lm-eval's task index skips such a file without a word, so its task reads as unknown.
    """
    root = Path(include_path)
    found = []
    for path in sorted(root.glob("**/*.yaml")):
        if SKIPPED_FOLDERS.intersection(path.parts):
            continue
        try:
            yaml.load(path.read_bytes(), Loader=TagIgnoringLoader)  # a safe loader: no objects
        except (yaml.YAMLError, OSError) as err:
            found.append(f"{path.relative_to(root)} ({parser_message(err)})")
    return found


def parser_message(err: Exception) -> str:
    """A YAML error on one line: 'line 2, column 15: mapping values are not allowed here'."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or problem is None:
        return first_line(err)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
