"""`<group>=null` on the command line, refused in one line before Hydra composes.

A config group override takes the name of a config in that group. `logger=null` (how some
templates switch loggers off; `callbacks.<name>=null` does drop one callback) failed inside
Hydra's defaults list, before any lmtrain code ran: `ValueError: Config group override must be
a string or a list. Got NoneType`, with a traceback. Hydra has no hook before it composes, so the
entry points ask here first; only lmtrain's own groups (folders of configs/) are known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lmtrain.utils.task import fail

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# `group=null`, `+group=null`, `++group=null`: Hydra's null in any case.
NULL_GROUP = re.compile(r"\+{0,2}(?P<group>[A-Za-z_][\w/]*)=(?i:null)")


def refuse_null_groups(argv: Sequence[str]) -> None:
    """One `error:` line and exit 1 for the first `<group>=null` in `argv` (the overrides)."""
    for arg in argv:
        match = NULL_GROUP.fullmatch(arg)
        group = match["group"] if match else None
        if group is None or not (CONFIGS / group).is_dir():
            continue
        names = sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if p.stem != "_base")
        others = [name for name in names if name != "none"]
        choices = [f"{group}=none (none at all)"] if "none" in names else []
        choices += [f"one of {', '.join(others)}"] if others else []
        default = "leave the override out (the group's default)"
        fail(
            f"{arg}: a config group takes the name of one of its configs, and null is none: "
            + (f"pass {', or '.join(choices)}, or {default}" if choices else default)
        )
