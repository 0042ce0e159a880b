"""lm-eval's failures while it scores, as one line each (`lmtrain.benchmarks.run_tasks`).

lm-eval checks some inputs only with a bare `assert` deep in HFLM, which printed a traceback with
no message after the model was loaded and the whole val split scored. Most are refused earlier
(`lmtrain.benchmarks.check_task_text`); these lines name what slipped past, and what to do.
"""

from __future__ import annotations

import traceback

from lmtrain.errors import LMTrainError, first_line
from lmtrain.utils.task_checks import fewshot_sampling_failed

__all__ = [
    "EMPTY_ANSWER_FIX",
    "LONG_ANSWER",
    "NO_ANSWER_TOKENS",
    "failed_assertion",
    "scoring_error",
]

# What the Rust tokenizers raise (a bare Exception) for a character that has no token.
UNKNOWN_CHARACTER = "Missing [UNK] token"
# lm-eval's check that an answer fits the context (lm_eval/models/huggingface.py).
LONG_ANSWER = "assert len(continuation_enc) <= self.max_length"
# lm-eval's check that an answer has tokens of its own after the context's (the same file).
NO_ANSWER_TOKENS = "assert len(continuation_enc) > 0"
# What to do about an answer without tokens of its own (the early check says it too).
EMPTY_ANSWER_FIX = (
    "give every choice (and target) text of its own, or change the task's target_delimiter or "
    "the context's last word so that each answer starts a token of its own"
)


def scoring_error(
    err: Exception, tasks: list[str], num_fewshot: int | None, max_length: int
) -> LMTrainError | None:
    """One line for `err`, raised while lm-eval scored `tasks` with `max_length` tokens of
    context; None when it is none of the failures named here (its traceback is the report)."""
    assertion = failed_assertion(err)
    if assertion == LONG_ANSWER:
        return LMTrainError(
            f"tasks={tasks} hold an answer longer than max_length={max_length} tokens, which "
            "lm-eval cannot score: pass a larger max_length (up to the model's context), or "
            "tasks with shorter answers"
        )
    if assertion == NO_ANSWER_TOKENS:  # one the early check missed: a few-shot prompt's cut
        return LMTrainError(
            f"tasks={tasks} hold an answer that adds no tokens after its context under this "
            "model's tokenizer (an empty choice, or one the tokenizer merges into the context's "
            f"last token), which lm-eval cannot score: {EMPTY_ANSWER_FIX}"
        )
    if fewshot_sampling_failed(err):  # a pool that check_fewshot_pools could not foresee
        return LMTrainError(
            f"tasks={tasks} ask for more few-shot examples than a task can draw "
            f"(num_fewshot={num_fewshot}; lm-eval: {first_line(err)}): pass a smaller "
            "num_fewshot, or give the task more distinct few-shot documents (the copies of the "
            "document being evaluated are left out)"
        )
    if UNKNOWN_CHARACTER in str(err):
        return LMTrainError(
            f"tasks={tasks} hold characters the model's tokenizer has no token for (a char "
            "tokenizer knows only its corpus's characters): run them on a model trained with a "
            "byte-level BPE tokenizer (data.tokenizer.kind=bpe) or a pretrained one"
        )
    return None


def failed_assertion(err: Exception) -> str | None:
    """The source line of the `assert` that raised `err` (None for any other error)."""
    if not isinstance(err, AssertionError) or err.__traceback__ is None:
        return None
    return traceback.extract_tb(err.__traceback__)[-1].line
