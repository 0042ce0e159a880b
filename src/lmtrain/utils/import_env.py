"""The launcher variables that libraries parse while they are imported, checked before that.

Importing Lightning runs `int()` on the first of RANK, LOCAL_RANK, SLURM_PROCID and
JSM_NAMESPACE_RANK that is set, and importing torchmetrics on LOCAL_RANK: `LOCAL_RANK=abc` made
every entry point die with a ValueError traceback from a library's import, before
`lmtrain.utils.launch_env` (which checks the launcher's variables once Lightning is imported)
could say anything. An entry point calls `exit_on_unreadable_rank()` before its imports; this
module imports nothing but the standard library, so that it can run first.
"""

from __future__ import annotations

import os
import sys

# What Lightning's and torchmetrics' imports read as whole numbers, and who sets each one.
RANK_VARIABLES = {
    "RANK": "torchrun sets it in each process it starts",
    "LOCAL_RANK": "torchrun and Lightning's launcher set it in each process",
    "SLURM_PROCID": "srun sets it in each task of a SLURM job",
    "JSM_NAMESPACE_RANK": "jsrun sets it in each task of an LSF job",
}


def unreadable_rank() -> str | None:
    """The one-line problem with the first rank variable that is set but not a whole number."""
    for name, setter in RANK_VARIABLES.items():
        value = os.environ.get(name)
        if value is None:
            continue
        try:
            int(value)
        except ValueError:
            return (
                f"{name}={value!r} is not a whole number, and the libraries read it as one while "
                f"they load: unset it ({setter})"
            )
    return None


def launched_rank() -> int:
    """This process's rank as Lightning reads it at import (the first of RANK_VARIABLES set);
    0 where none is, or one is unreadable (the entry point refuses that)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None:
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def exit_on_unreadable_rank() -> None:
    """Print the problem as the entry point's one `error:` line and exit 1, as a user error."""
    problem = unreadable_rank()
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(1)
