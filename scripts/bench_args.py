"""bench.py's and bench_switches.py's arguments, refused before any work.

A bad number, an unknown name or an override that lmtrain.train or the raw loop would refuse
used to show only after minutes of measuring, or as a traceback; each is now one line at once,
every problem of the command line named together.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from bench_config import compose_config
from bench_raw import raw_loop_problem
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError
from lmtrain.utils.config_checks import check_train_config
from lmtrain.utils.instantiate import instantiate_trainer


def timing_problems(steps: int, warmup: int, repeats: int) -> list[str]:
    """What is wrong with --steps, --warmup and --repeats: each run's clock starts at the end of
    step `warmup` (so at least 1) and needs a step after it."""
    problems = []
    if warmup < 1:
        problems.append(f"--warmup {warmup}: pass 1 or more (the clock starts after that step)")
    if steps <= warmup:
        problems.append(
            f"--steps {steps} leaves no timed step after --warmup {warmup}: "
            f"pass --steps {max(warmup, 1) + 1} or more"
        )
    if repeats < 1:
        problems.append(f"--repeats {repeats}: pass 1 or more")
    return problems


def refuse_bad_arguments(
    parser: argparse.ArgumentParser, args: argparse.Namespace, flag: str, names: str, known: list
) -> None:
    """One parser error naming every bad --steps, --warmup or --repeats and every unknown name
    of `flag` (`names`, comma-separated); the scripts check --out and --data next."""
    problems = timing_problems(args.steps, args.warmup, args.repeats)
    threads = getattr(args, "threads", None)
    if threads is not None and threads < 1:
        problems.append(f"--threads {threads}: pass 1 or more, or leave it out (torch's own)")
    unknown = [name for name in names.split(",") if name not in known]
    if unknown:
        problems.append(f"{flag}: unknown {unknown}: pass some of {','.join(known)}")
    if problems:
        parser.error("; ".join(problems))


@contextlib.contextmanager
def quiet(*names: str) -> Iterator[None]:
    """Only errors from the loggers `names` in the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def validation_problem(cfg: DictConfig) -> str | None:
    """Validation turned back on (compose_config sets trainer.limit_val_batches=0): the Lightning
    side would validate and the raw loop, which has no validation, would not: not the same work."""
    limit = cfg.trainer.get("limit_val_batches")
    if limit == 0 and not isinstance(limit, bool):
        return None
    return (
        f"trainer.limit_val_batches={'null' if limit is None else limit}: the raw loop has no "
        "validation, so the benchmark runs none on either side: leave it out"
    )


def refuse_bad_overrides(sizes: list[str], steps: int, out: Path, overrides: list[str]) -> None:
    """Every size's config with `overrides`, checked as lmtrain.train checks it and for what the
    raw loop does not mirror: the first problem ends the script in one `error:` line."""
    for size in sizes:
        cfg = compose_config(size, steps, out, overrides)
        try:
            with quiet("lmtrain.utils.trainer_checks", "lightning.pytorch"):  # the timed runs say
                check_train_config(cfg)  # it; a warm-up is no concern of a speed benchmark
                instantiate_trainer(cfg.trainer, logger=False)  # what Lightning refuses (no GPU)
        except LMTrainError as err:
            sys.exit(f"error: overrides {shlex.join(overrides)}: {err}")
        problem = raw_loop_problem(cfg) or validation_problem(cfg)
        if problem:
            sys.exit(f"error: {problem}")
