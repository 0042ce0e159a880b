"""Hydra's command flags that cannot go together, refused in one line before Hydra starts.

`-m seed=1,2 --cfg job` (or `--info`, or `-m hydra/launcher=slurm --cfg hydra`) ended in Hydra's
traceback: `ValueError: Only one of --run, --multirun, --cfg, --info and --shell_completion can
be specified` (red team rev_sweep21). The command line is read with Hydra's own parser, so that
its abbreviations (`--multi`) and combined flags count as Hydra counts them, and only what Hydra
would refuse is refused here; anything it cannot parse is left to Hydra's own message.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from collections.abc import Sequence

from lmtrain.utils.task import fail

# `resume=<run>` or `resume=latest` (lmtrain.train); `resume=null` resumes nothing.
RESUME = re.compile(r"\+{0,2}resume=(?!(?i:null)$).+")
# What `--info` shows of the config composed from configs/ (not plugins, searchpath).
COMPOSED_INFO = ("all", "config", "defaults", "defaults-tree")


def hydra_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """`argv` parsed by the parser Hydra's main uses, quietly; None where Hydra would print and
    exit (--version, a bad flag: it says so again itself)."""
    from hydra._internal.utils import get_args_parser

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return get_args_parser().parse_args(list(argv))
    except SystemExit:
        return None


def refuse_clashing_commands(argv: Sequence[str]) -> None:
    """One `error:` line and exit 1 when `argv` asks Hydra for two of its commands at once
    (--run, --multirun, --cfg, --info, --shell-completion), for --resolve or -p without --cfg,
    or for --cfg (or --info of the config) with resume= (it would print the composed config,
    not the resumed run's)."""
    if not any(arg.startswith("-") for arg in argv):
        return
    args = hydra_args(argv)
    if args is None:
        return
    if args.help:
        return  # Hydra shows its help first, whatever else is asked
    if args.resolve and args.cfg is None:  # Hydra takes it with --help only, not --hydra-help
        fail("--resolve resolves the config that --cfg prints: add --cfg job (or hydra, all)")
    if args.package is not None and args.cfg is None and args.info is None:
        # Hydra ignores it then, and the command trained (red team r_cfg31).
        fail(
            f"-p/--package {args.package} picks the part of the config that --cfg prints: add "
            f"--cfg job (-p {args.package} --cfg job); without --cfg the command runs"
        )
    if args.hydra_help:
        return
    asked = [
        name
        for name, on in (
            ("-m/--multirun", args.multirun),
            ("--run", args.run),
            (f"--cfg {args.cfg}", args.cfg is not None),
            (f"--info {args.info}", args.info is not None),
            ("--shell-completion", args.shell_completion),
        )
        if on
    ]
    if len(asked) > 1:
        fail(f"{' and '.join(asked)}: Hydra runs one of these at a time: {advice(args)}")
    resume = next((o for o in args.overrides or [] if RESUME.fullmatch(o)), None)
    shown = f"--cfg {args.cfg}" if args.cfg is not None else None
    if args.info in COMPOSED_INFO:  # `--info config` prints the composed config too (r_cfg31)
        shown = f"--info {args.info}"
    if shown is not None and resume is not None:
        # The resumed run's saved config replaces the composed one in ResumeRun.on_run_start,
        # a callback Hydra does not call for --cfg: it would print a config the run never uses.
        fail(
            f"{shown} with {resume}: {shown.split()[0]} shows the config composed from configs/ "
            "and this command line, not the saved config that resume= continues: read the run "
            "folder's .hydra/config.yaml (overrides typed with resume= go on top of it), or "
            "drop resume= to see a new run's config"
        )


def advice(args: object) -> str:
    """What to run instead of the clashing flags `args` holds."""
    multirun, cfg, info = (getattr(args, name) for name in ("multirun", "cfg", "info"))
    if getattr(args, "shell_completion", False):
        return "run --shell-completion install=bash (or zsh, fish) on its own"
    if multirun and (cfg is not None or info is not None):
        shown = f"--cfg {cfg}" if cfg is not None else f"--info {info}"
        return (
            f"drop -m to have {shown} show one job (give each swept key one value, e.g. "
            "seed=1 for seed=1,2); --cfg hydra without -m still shows the sweeper and launcher "
            "(hydra.sweeper, hydra.launcher) that -m would use"
        )
    if cfg is not None and info is not None:
        return f"pass --cfg {cfg} or --info {info}, not both"
    return "pass -m to run a sweep, or leave it out (and --run) to run one job"
