"""What every entry point does around its task: clean errors, a finished W&B run, output files.

A task that fails still closes its W&B run with the exit code (otherwise the offline run is left
"running" forever), and a user error prints one line instead of a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lmtrain.errors import LMTrainError

log = logging.getLogger(__name__)
T = TypeVar("T")


def task_wrapper(task: Callable[..., T]) -> Callable[..., T]:
    """Run `task`; on an LMTrainError print `error: <message>` and exit 1; always finish W&B."""

    @functools.wraps(task)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        exit_code = 1
        try:
            result = task(*args, **kwargs)
            exit_code = 0
            return result
        except Exception as err:
            user_error = find_user_error(err)
            if user_error is None:
                raise
            print(f"error: {user_error}", file=sys.stderr, flush=True)
            raise SystemExit(1) from None
        finally:
            finish_wandb(exit_code)

    return wrapped


def find_user_error(err: BaseException | None) -> LMTrainError | None:
    """The LMTrainError behind `err`, also when Hydra's instantiate wrapped it in its own."""
    while err is not None:
        if isinstance(err, LMTrainError):
            return err
        err = err.__cause__ or err.__context__
    return None


def finish_wandb(exit_code: int) -> None:
    """Close the W&B run if one is open (a no-op when wandb was never imported)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def write_json_atomic(path: str | Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(data, tmp, indent=2, sort_keys=True)
        tmp.write("\n")
    os.replace(tmp.name, path)


def plain_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Tensors and numbers from Lightning's metric dicts as plain floats."""
    return {k: float(v) for k, v in metrics.items()}
