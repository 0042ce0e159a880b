"""When a resumed run's `.hydra/` record is written: once it trains, never when it trains nothing.

`ResumeRun` (`resume=`, or a command in a folder that already holds a run's record) makes the
record's files at job start and leaves them pending here. They replace the folder's record when
training starts (the checkpoint restored, Lightning's and lmtrain's checks passed): a command
refused before then must not become the config a later `resume=<run>` reads.

A resume of a run that had ended (at `max_steps`, or stopped by EarlyStopping) trains nothing:
its overrides (`trainer.accumulate_grad_batches=3`, an lr) were never checked against the
checkpoint nor applied, and writing them made the next `resume=` refuse a value the user never
typed there (found by a red team). Such a command leaves the record as it was and says so
(`discard_resumed_record`).

A run stopped in its final validation (a SIGTERM after training's last step) had not ended: its
resume trains nothing either, and runs that validation. The overrides typed with it are mostly
the run's own (the `error:` line asks for the command again, with `ckpt_path=last`), so only
those that differ from its record are named, and not as a run that had ended
(`keep_record_for_final_validation`; found by a red team).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmtrain.utils.resume_overrides import ABSENT, lookup

log = logging.getLogger(__name__)

# The resumed run's `.hydra/` files, made at job start and written once the run has started.
_pending_record: list[Callable[[], None]] = []


def pend_record(write: Callable[[], None] | None) -> None:
    """Replace this process's pending record with `write` (None: no record to write)."""
    _pending_record.clear()  # an earlier job's in this process (refused, or a notebook's)
    if write is not None:
        _pending_record.append(write)


class WriteResumedRecord(Callback):
    """Writes the pending `.hydra/` files when training starts, unless the run stops before its
    first step (a callback before this one, `EndedRun`, found that EarlyStopping had ended it)."""

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.should_stop:
            write_resumed_record()


def write_resumed_record() -> None:
    """Write the `.hydra/` files `ResumeRun` made for this process, if any, once."""
    while _pending_record:
        _pending_record.pop()()


def discard_resumed_record(step: int) -> None:
    """Drop the pending `.hydra/` files of a run that trained nothing (it had ended at `step`),
    saying which typed overrides were not applied."""
    if not _pending_record:
        return  # rank > 0, or no record of the folder's to replace
    _pending_record.clear()
    typed = typed_overrides()
    if not typed:  # nothing typed, nothing left unapplied (EndedRun says it had ended)
        return
    log.warning(
        "The run had ended at step %d and trained nothing: the overrides typed with it (%s) "
        "were not applied, and its .hydra/ record stands; to train on, raise "
        "trainer.max_steps (resume=<run folder> trainer.max_steps=<more>; a run EarlyStopping "
        "ended stays ended)",
        step,
        " ".join(typed),
    )


def keep_record_for_final_validation(step: int, cfg: DictConfig) -> None:
    """Drop the pending `.hydra/` files of a resume that trained nothing and runs the final
    validation its run had not finished (stopped there): the run's record stands. The typed
    overrides that `cfg` and the record agree on are the run's own and need no word; the others
    trained nothing, which the warning says."""
    if not _pending_record:
        return  # rank > 0, or no record of the folder's to replace
    _pending_record.clear()
    hydra = HydraConfig.get()  # a pending record is a Hydra job's
    record = Path(hydra.runtime.output_dir) / str(hydra.output_subdir or ".hydra")
    differ = not_the_runs_own(typed_overrides(), record, cfg)
    if differ:
        log.warning(
            "The run had finished training at step %d; this resume runs its final validation "
            "only and trains nothing: the overrides typed with it that differ from its .hydra/ "
            "record (%s) were not applied to training, and that record stands; to train on, "
            "raise trainer.max_steps (resume=<run folder> trainer.max_steps=<more>)",
            step,
            " ".join(differ),
        )


def typed_overrides() -> list[str]:
    """The overrides typed with this Hydra job, less the ones that name what to resume."""
    if not HydraConfig.initialized():
        return []
    task = HydraConfig.get().overrides.task
    return [str(o) for o in task if not str(o).startswith(("resume=", "ckpt_path="))]


def not_the_runs_own(typed: list[str], record: Path, cfg: DictConfig) -> list[str]:
    """The overrides in `typed` that may change the run `record` holds: neither typed with it
    (its overrides.yaml) nor giving their key the value (a config group the choice) that
    `cfg` and the record's config share. With a record that cannot be read, all of them."""
    try:
        own = [str(o) for o in OmegaConf.load(record / "overrides.yaml") or []]
        saved = OmegaConf.to_container(OmegaConf.load(record / "config.yaml"))
        saved_choices = OmegaConf.load(record / "hydra.yaml").hydra.runtime.choices
        parsed = OverridesParser.create().parse_overrides(typed)
    except (OSError, yaml.YAMLError, OmegaConfBaseException, OverrideParseException):
        return typed
    current = OmegaConf.to_container(cfg)
    choices = HydraConfig.get().runtime.choices

    def owned(text: str, override: Override) -> bool:
        key = override.key_or_group
        if text in own:
            return True
        if override.package is not None:  # a group put elsewhere: only its text tells
            return False
        if key in choices:  # a config group: the same choice
            return key in saved_choices and saved_choices[key] == choices[key]
        value = lookup(current, key)
        return value is not ABSENT and value == lookup(saved, key)

    return [text for text, o in zip(typed, parsed, strict=True) if not owned(text, o)]
