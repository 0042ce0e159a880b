"""The text an lm-eval task will hand the tokenizer, read before anything is scored.

A char tokenizer has no unknown token: lm-eval's first request with a character outside the
training corpus raised the Rust tokenizer's bare "Missing [UNK] token", after the whole val split
had been scored, naming neither the task nor the character. `unencodable_task_characters` reads
each task's documents first (its prompt, target and choices, as lm-eval's task renders them) and
names the characters, as the corpus check does (`lmtrain.data.coverage`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lmtrain.data.coverage import excerpt, unencodable_characters

__all__ = ["task_texts", "unencodable_task_characters"]


def strings_in(value: Any) -> Iterator[str]:
    """The strings of a rendered field: a string, or a list of them (choices); an answer given
    as an index is no text."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


def task_texts(task: Any, limit: int | float | None) -> Iterator[str]:
    """The prompts, targets and choices of the documents of `task` that `limit` keeps (as lm-eval
    counts it: a float below 1 is a share, rounded up), and the delimiter before an answer."""
    config = task.config
    output_type = task.get_config("output_type")
    # The few-shot delimiters join examples, which only the late check sees (a task without
    # few-shot examples never encodes them: a corpus without "\n" refused it here).
    yield from strings_in(getattr(config, "description", None))
    if output_type in ("multiple_choice", "loglikelihood"):  # context + delimiter + answer
        yield from strings_in(getattr(config, "target_delimiter", None))
    docs = task.eval_docs
    if limit is not None:
        count = math.ceil(len(docs) * limit) if limit < 1.0 else int(limit)
        docs = [docs[i] for i in range(min(count, len(docs)))]
    # What HFLM encodes: the prompt, and the choices or the scored target; a generated answer's
    # target is only compared with the text (and a choice task's may be an index).
    for doc in docs:
        yield from strings_in(task.doc_to_text(doc))
        if output_type == "multiple_choice":
            yield from strings_in(task.doc_to_choice(doc))
        elif output_type in ("loglikelihood", "loglikelihood_rolling"):
            yield from strings_in(task.doc_to_target(doc))


def readable_tasks(
    tasks: Mapping[str, Any], read: Callable[[Any], Iterator[Any]]
) -> Iterator[tuple[str, list[Any]]]:
    """(name, what `read` finds in it) for each of `tasks` whose documents can be read here; one
    that cannot is skipped: lm-eval reads it again, and its own error says why in its words."""
    for name, task in tasks.items():
        try:
            found = list(read(task))
        except Exception:  # a task's own jinja or function: lm-eval's error is the one to show
            continue
        yield name, found


def unencodable_task_characters(
    tasks: Mapping[str, Any], encode: Callable[[str], Any], limit: int | float | None
) -> tuple[str, list[str], str] | None:
    """(task name, the characters `encode` raises on, an excerpt around the first) for the first
    of `tasks` whose text holds such characters; None when every one encodes.

    A task whose documents cannot be read here is skipped (`readable_tasks`)."""
    for name, texts in readable_tasks(tasks, lambda task: task_texts(task, limit)):
        characters = "".join(dict.fromkeys(char for text in texts for char in text))
        if encodes(encode, characters):
            continue
        missing = unencodable_characters(encode, characters)
        if missing:
            first = next(text for text in texts if missing[0] in text)
            return name, missing, excerpt(first, first.index(missing[0]))
    return None


def encodes(encode: Callable[[str], Any], text: str) -> bool:
    """Whether `encode` takes `text` without raising."""
    try:
        encode(text)
    except Exception:  # the Rust tokenizer raises a bare Exception
        return False
    return True
