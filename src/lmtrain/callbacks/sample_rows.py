"""The layout of samples.txt, written and read back as the rows of the W&B table `samples`.

A resumed run's W&B table must hold the rows logged before the interruption too. wandb carries
an incremental table's earlier increments into a resumed run only through the run summary the
server sends back (`Table._load_incremental_table_state_from_resumed_run`); an offline resume
has none, and its table started again from nothing: a run killed and resumed showed 6 of an
uninterrupted run's 8 rows. samples.txt holds every sample with its step, so the earlier rows are
read back from it, and the writer and the reader of its layout live here side by side.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

# The line that opens each validation's block in samples.txt.
BLOCK_HEADER = re.compile(r"^=== step (\d+) ===$", re.MULTILINE)
# Between two samples of one block.
SEPARATOR = "\n\n---\n\n"
TABLE_TYPE = "incremental-table-file"  # wandb's `_type` of a logged incremental table


def block_text(step: int, rows: Sequence[Sequence[Any]]) -> str:
    """The block of samples.txt for `rows` ([step, prompt, completion]) sampled at `step`."""
    samples = SEPARATOR.join(prompt + completion for _, prompt, completion in rows)
    return f"=== step {step} ===\n\n{samples}\n\n"


def blocks_up_to(text: str, step: int) -> str:
    """`text` (a samples.txt) without the blocks of steps after `step`; blocks follow each other
    in step order, so it is cut at the first later one."""
    for match in BLOCK_HEADER.finditer(text):
        if int(match[1]) > step:
            return text[: match.start()]
    return text


def rows_up_to(text: str, step: int, prompts: Sequence[str]) -> list[list[Any]]:
    """The table rows ([step, prompt, completion]) of `text`'s blocks of steps up to `step`:
    rows of later steps were logged after the checkpoint a run resumes from, and the resumed
    run makes them again."""
    headers = list(BLOCK_HEADER.finditer(text))
    rows: list[list[Any]] = []
    for header, after in zip(headers, [*headers[1:], None], strict=True):
        at = int(header[1])
        if at > step:
            break
        body = text[header.end() : after.start() if after else len(text)]
        body = body.removeprefix("\n\n").removesuffix("\n\n")
        rows += [[at, prompt, completion] for prompt, completion in split_block(body, prompts)]
    return rows


def split_block(body: str, prompts: Sequence[str]) -> list[tuple[str, str]]:
    """A block's samples as (prompt, completion), cut where the next prompt follows a separator
    (a completion may hold a separator of its own). A block written with other prompts (changed
    for the resume) is cut at each separator, its prompt the longest of `prompts` it starts
    with, else none: its text stays whole in the completion."""
    pairs, rest = [], body
    for i, prompt in enumerate(prompts):
        if not rest.startswith(prompt):
            break
        following = prompts[i + 1] if i + 1 < len(prompts) else None
        cut = len(rest) if following is None else rest.find(SEPARATOR + following, len(prompt))
        if cut < 0:
            break
        pairs.append((prompt, rest[len(prompt) : cut]))
        rest = rest[cut + len(SEPARATOR) :]
        if following is None:
            return pairs
    return [_guess_prompt(sample, prompts) for sample in body.split(SEPARATOR)]


def _guess_prompt(sample: str, prompts: Sequence[str]) -> tuple[str, str]:
    prompt = max((p for p in prompts if sample.startswith(p)), key=len, default="")
    return prompt, sample[len(prompt) :]


def wandb_carries(run: Any, key: str) -> bool:
    """Whether wandb itself carries the earlier increments of the table `key` into `run`: a
    resumed run whose summary ends with an incremental table there (wandb's own test)."""
    summary = run.summary.get(key) if run.resumed else None
    return isinstance(summary, dict) and summary.get("_type") == TABLE_TYPE
