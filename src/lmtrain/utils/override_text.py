"""A `key=value` override as one shell argument that Hydra parses back to `value`.

The resume commands lmtrain prints (`resume with ckpt_path=last hydra.run.dir=<run>`) put the
run folder in raw: a folder with a space, `,`, `=`, a quote or a non-ASCII letter could not be
pasted (Hydra's lexer refused it, or read `a,b` as a sweep: red team r_path31). Hydra's own
parser decides here whether the raw text already reads back as the same string (then the line
stays as it always was); otherwise the value goes in Hydra's quotes, and the whole argument
through the shell's quotes (`shell_arg`); an argument the shell takes as it is stays unquoted.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException


@cache
def _parser() -> OverridesParser:
    return OverridesParser.create()


def override_arg(key: str, value: str | Path) -> str:
    """`key=value` as one shell argument: pasted into a shell, Hydra reads `value` back as the
    string it is. A plain value (`/runs/2024-01-01_12-00-00`) is left as it is."""
    text = str(value)
    plain = f"{key}={text}"
    if _reads_back(plain, text):
        return shlex.quote(plain)
    return shell_arg(f"{key}={hydra_quoted(text)}")


def shell_arg(arg: str) -> str:
    """`arg` as one shell word: in double quotes when it holds single quotes (Hydra's) and
    nothing a double-quoted word expands (`"hydra.run.dir='/a b,c'"` reads better than
    shlex's `'"'"'`); else `shlex.quote`'s."""
    if "'" in arg and not set(arg) & set('"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)


def hydra_quoted(text: str) -> str:
    """`text` as a quoted value of Hydra's grammar: in single quotes (double quotes when it
    holds a single quote and no double one), the quote escaped with a backslash, and the
    backslashes before a quote (or before the closing one) doubled, as Hydra reads them."""
    quote = '"' if "'" in text and '"' not in text else "'"
    escaped = re.sub(rf"(\\*)({quote})", lambda m: m.group(1) * 2 + "\\" + m.group(2), text)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)
    return f"{quote}{escaped}{quote}"


def _reads_back(override: str, text: str) -> bool:
    """Whether Hydra parses `override` to the string `text` (not a number, a list, a sweep)."""
    try:
        value = _parser().parse_override(override).value()
    except HydraException:  # the lexer refuses it (a space at the end, `ü`, `[`)
        return False
    return isinstance(value, str) and value == text
