"""The overrides typed on the running Hydra job's command line.

Some refusals depend on what the user typed, not on what the composed config holds: a key whose
config sets it anyway (eval's trainer group sets limit_val_batches, which eval ignores), or a
node that is absent because `~key` removed it (and not because the config never had it).
"""

from __future__ import annotations

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf


def typed_overrides() -> list[str]:
    """The running job's overrides (`hydra.overrides.task`): the command line's, or those of
    `compose()` with its Hydra config set as the job's; [] outside a Hydra job."""
    if not HydraConfig.initialized():
        return []
    overrides = OmegaConf.select(HydraConfig.get(), "overrides.task", default=None)
    return [str(o) for o in overrides or []]


def typed_value(key: str) -> str | None:
    """The value typed for `key` (`key=`, `+key=`, `++key=`) as text, or None if not typed."""
    for override in typed_overrides():
        name, equals, value = override.partition("=")
        if equals and name.lstrip("+") == key:
            return value
    return None


def removed_on_command_line(key: str) -> bool:
    """Whether the overrides delete `key` (`~key`, `~key=<its value>`)."""
    return any(o.partition("=")[0] == f"~{key}" for o in typed_overrides())
