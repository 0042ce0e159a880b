"""`python -m lmtrain.strategies consolidate <folder> [--output FILE] [--overwrite]`."""

from __future__ import annotations

from lmtrain.utils import gc_pause

# The libraries import with the garbage collector paused (lmtrain.utils.gc_pause).
with gc_pause.paused_for_imports():
    import argparse
    import sys

    from lmtrain.errors import LMTrainError
    from lmtrain.strategies.consolidate import consolidate
    from lmtrain.utils.interrupt_exit import interrupt_is_one_line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lmtrain.strategies",
        description="Merge a sharded checkpoint folder (trainer=fsdp) into one .ckpt file.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("consolidate", help="sharded checkpoint folder -> one .ckpt")
    merge.add_argument("folder", help="a sharded checkpoint, e.g. <run>/checkpoints/last.ckpt")
    merge.add_argument("--output", help="the file to write (default: <name>.consolidated.ckpt)")
    merge.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the output file if it exists (without it, an existing file is refused)",
    )
    args = parser.parse_args(argv)
    try:
        path = consolidate(args.folder, args.output, overwrite=args.overwrite)
    except LMTrainError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    print(path)


if __name__ == "__main__":
    with gc_pause.without_final_gc(), interrupt_is_one_line():
        main()
