"""lm-eval's log, kept to what a user of `lmtrain.eval tasks=[...]` should read: its INFO lines
off, its warnings about a model passed as an object (that is how `lmtrain.benchmarks` uses it)
dropped, and its per-request truncation warning shown once."""

from __future__ import annotations

import logging

__all__ = ["EXPECTED_WARNINGS", "TRUNCATING", "QuietWarnings", "quiet_lm_eval"]

# The start of lm-eval's warnings about a model passed as an object (see QuietWarnings).
EXPECTED_WARNINGS = ("`pretrained` model kwarg is not of type `str`", "Passed an already-init")
# The start of the warning lm-eval logs for every request longer than max_length.
TRUNCATING = "Combined length of context"


class QuietWarnings(logging.Filter):
    """Drops lm-eval's warnings about a model passed as an object (that is how we use it), and
    every truncation warning after the first (it would log one per request)."""

    def __init__(self) -> None:
        super().__init__()
        self.truncated = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(TRUNCATING):
            first, self.truncated = not self.truncated, True
            return first
        return not message.startswith(EXPECTED_WARNINGS)


QUIET = QuietWarnings()


def quiet_lm_eval() -> None:
    """lm-eval's INFO lines off and its repeated or expected warnings dropped: what is left in
    the log is what the user should read (addFilter skips a filter the logger holds already)."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    logging.getLogger("lm_eval.models.huggingface").addFilter(QUIET)
    QUIET.truncated = False  # this run's first truncation is shown
