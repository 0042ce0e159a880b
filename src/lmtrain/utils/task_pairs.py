"""The (context, answer) pairs an lm-eval task scores, checked before anything is scored.

HFLM scores an answer as the tokens of `context + answer` past those of `context`: an empty
choice, or one the tokenizer merges into the context's last token (a SentencePiece model whose
merges cross spaces), leaves none, and lm-eval's bare `assert len(continuation_enc) > 0` failed
after the model was loaded and the whole val split scored, naming neither the task nor the choice.
`answer_without_tokens` builds each document's requests with lm-eval's own task methods and finds
such a pair first. It reads the zero-shot prompt: few-shot examples come before the document's own
text, so they rarely change how its end is cut (`lmtrain.utils.lm_eval_failures` catches the rest).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from transformers import PreTrainedTokenizerBase

from lmtrain.utils.task_text import readable_tasks

__all__ = ["answer_without_tokens", "scored_pairs"]

# The request types whose answers HFLM cuts off the tokens of context + answer.
CUT_ANSWERS = ("loglikelihood",)


def scored_pairs(task: Any, limit: int | float | None) -> Iterator[tuple[str, str]]:
    """The (context, answer) pairs HFLM's loglikelihood gets for the documents of `task` that
    `limit` keeps, built by lm-eval's `fewshot_context` (no examples) and `construct_requests`."""
    from lm_eval.evaluator_utils import get_sample_size

    for _, doc in task.doc_iterator(limit=get_sample_size(task, limit)):
        prefix = task.doc_to_prefix(doc)
        context = task.fewshot_context(doc, num_fewshot=0, gen_prefix=prefix)
        requests = task.construct_requests(doc=doc, ctx=context, metadata=(None, None, None))
        for request in requests if isinstance(requests, list) else [requests]:
            if request.request_type in CUT_ANSWERS:
                yield request.arguments[0], request.arguments[1]


def answer_tokens(tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]]) -> list[int]:
    """How many tokens each answer of `pairs` gets, cut as HFLM's `_encode_pair` cuts it: the
    context's trailing spaces move to the answer (an empty context scores the answer alone)."""
    moved = []
    for context, answer in pairs:
        spaces = len(context) - len(context.rstrip())
        moved.append((context[: len(context) - spaces], context[len(context) - spaces :] + answer))
    # Special tokens add as many to both sides; each side in one batch (the Rust threads).
    wholes = tokenizer([c + a for c, a in moved], add_special_tokens=False)["input_ids"]
    contexts = tokenizer([c for c, _ in moved], add_special_tokens=False)["input_ids"]
    return [len(whole) - len(ids) for whole, ids in zip(wholes, contexts, strict=True)]


def answer_without_tokens(
    tasks: Mapping[str, Any],
    tokenizer: PreTrainedTokenizerBase,
    limit: int | float | None,
) -> tuple[str, str, str] | None:
    """(task name, context, answer) for the first pair of `tasks` whose answer gets no tokens of
    its own under `tokenizer`; None when every answer has some.

    A task whose documents cannot be read here is skipped (`readable_tasks`)."""
    for name, pairs in readable_tasks(tasks, lambda task: scored_pairs(task, limit)):
        if not pairs:
            continue
        for (context, answer), count in zip(pairs, answer_tokens(tokenizer, pairs), strict=True):
            if count <= 0:
                return name, context, answer
    return None
