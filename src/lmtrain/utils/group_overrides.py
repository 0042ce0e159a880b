"""`<group>=null` on the command line, refused in one line before Hydra composes.

A config group override takes the name of a config in that group. `logger=null` (how some
templates switch loggers off; `callbacks.<name>=null` does drop one callback) failed inside
Hydra's defaults list, before any lmtrain code ran: `ValueError: Config group override must be
a string or a list. Got NoneType`, with a traceback. Hydra has no hook before it composes, so the
entry points ask here first. The groups known: lmtrain's own (folders of configs/), and Hydra's
(`hydra/sweeper=null`, `hydra/job_logging=null`): the folders of Hydra's own configs and of
configs/hydra/, and the configs its plugins store (hydra/sweeper: basic, optuna, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins

from lmtrain.utils.global_headers import refuse_headerless_globals
from lmtrain.utils.hydra_flags import refuse_clashing_commands
from lmtrain.utils.task import fail

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Hydra's own config groups (hydra/job_logging, hydra/hydra_logging, hydra/output, ...).
HYDRA_CONFIGS = Path(hydra.__file__).resolve().parent / "conf"
# `group=null`, `+group=null`, `++group=null`: Hydra's null in any case.
NULL_GROUP = re.compile(r"\+{0,2}(?P<group>[A-Za-z_][\w/]*)=(?i:null)")


def refuse_null_groups(argv: Sequence[str]) -> None:
    """One `error:` line and exit 1 for the first `<group>=null` in `argv` (the overrides), or
    for Hydra flags that cannot go together (`lmtrain.utils.hydra_flags`): every entry point
    calls this before Hydra, which has no hook of its own."""
    refuse_clashing_commands(argv)
    for arg in argv:
        match = NULL_GROUP.fullmatch(arg)
        group = match["group"] if match else None
        if group is None or not (group.startswith("hydra/") or (CONFIGS / group).is_dir()):
            continue  # an unknown group: Hydra's own error names it
        names = config_names(group)
        others = [name for name in names if name != "none"]
        choices = [f"{group}=none (none at all)"] if "none" in names else []
        choices += [f"one of {', '.join(others)}"] if others else []
        default = "leave the override out (the group's default)"
        fail(
            f"{arg}: a config group takes the name of one of its configs, and null is none: "
            + (f"pass {', or '.join(choices)}, or {default}" if choices else default)
        )
    refuse_headerless_globals(argv, CONFIGS)  # Hydra's "Could not override 'model@experiment...'"


def config_names(group: str) -> list[str]:
    """The configs a group offers: its YAML files under configs/ and, for `hydra/<group>`,
    Hydra's own and those its plugins store (none for a group nobody offers)."""
    folders = [CONFIGS / group] + ([HYDRA_CONFIGS / group] if group.startswith("hydra/") else [])
    names = {p.stem for folder in folders for p in folder.glob("*.yaml") if p.stem != "_base"}
    if group.startswith("hydra/"):
        Plugins.instance()  # imports the plugins, which store their configs (hydra/sweeper)
        try:
            stored = ConfigStore.instance().list(group)
        except OSError:  # no config stored in that group
            stored = []
        names |= {name.removesuffix(".yaml") for name in stored if name.endswith(".yaml")}
    return sorted(names)
