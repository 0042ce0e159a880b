"""`WandbModelArtifact`: the run's best model as a W&B artifact of type "model", offline too.

Lightning's `WandbLogger(log_model=True)` uploads checkpoints, and refuses an offline run. This
callback logs what a user of the model wants instead: at the end of training, rank 0 exports the
best checkpoint (lowest val/loss; last.ckpt when no validation ranked one) with
`lmtrain.export.export_checkpoint` into `<run folder>/export`, and logs that folder as the
artifact `model-<run id>` (aliases `latest` and `best` or `last`). An export is a third of a
checkpoint with AdamW's states, loads with plain transformers and no pickle, and carries its model
card; the folder stays in the run, so nobody has to export it again.

Offline, wandb writes the artifact's manifest into the run's `.wandb` file and `wandb sync`
uploads the files later. By default they are referenced where they are (policy "immutable"),
not copied into wandb's staging folder (`$WANDB_DATA_DIR`, in the home directory), which would
double the disk used. An offline artifact references hard links of the export's files, in
`<export_dir>/../.<export_dir name>-artifacts/step-<N>/`: a resumed run's export replaces the
export folder, and the earlier session's artifact would then name bytes that are no longer there
when synced; the links keep them at no cost in disk until then. `copy_files=true` copies the
files into the staging folder instead, for an export that may be moved before the sync.

An export_dir outside the run folder may be shared (by hand, or fixed in a sweep config): an
export replaces only this run's own previous export (made from a checkpoint in its checkpoint
folders: a resume exports again). Another run's export, which a second run replaced without a
word, or a folder of other files is refused in one line before training; `overwrite_run=true`
replaces another run's export, as it does another run's checkpoints, and never anything else.

A failure here comes after training has saved everything: it is a warning naming the way to do
it by hand, never the end of the run. Only a bad `export_dir` is refused, before training.

The export is for the artifact: with W&B disabled (`WANDB_MODE=disabled`, or `mode=disabled`
given to wandb.init) there is no artifact and no export either, as without a W&B logger; one
info line says so and how to export by hand.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from lmtrain.callbacks.export_owner import foreign_export, own_checkpoint_dirs
from lmtrain.errors import LMTrainError
from lmtrain.models.checkpoint_paths import last_checkpoint_path
from lmtrain.models.export_folder import export_checkpoint
from lmtrain.utils.export_dir import EXPORT_META, checked_out_dir
from lmtrain.utils.export_overwrite import link_or_copy
from lmtrain.utils.io import write_json
from lmtrain.utils.sharded_layout import is_sharded_checkpoint

log = logging.getLogger(__name__)

ARTIFACT_TYPE = "model"
KEY = "callbacks.wandb_model.export_dir"


class WandbModelArtifact(L.Callback):
    """At the end of `trainer.fit`, export the best checkpoint and log it to every WandbLogger."""

    def __init__(
        self,
        export_dir: str | os.PathLike[str],
        root_dir: str | os.PathLike[str],
        enabled: bool = True,
        verify: bool = True,
        generation: dict[str, Any] | None = None,
        copy_files: bool = False,
    ) -> None:
        """`root_dir`: the project root, which an export never replaces; `verify`, `generation`:
        as in export.yaml; `copy_files`: copy the files into wandb's staging folder (see above)."""
        self.export_dir = Path(export_dir)
        self.root_dir = str(root_dir)
        self.enabled = enabled
        self.verify = verify
        self.generation = dict(generation or {})
        self.copy_files = copy_files
        # Set by `setup`: what decides whose export export_dir may hold (refuse_foreign_export).
        self.own_dirs: list[Path] = []
        self.run_dir: Path | None = None
        self.replace_others = False
        self.default_dir: Path | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Refuse, before any step, an export_dir that the export at the end would refuse, or
        that holds another run's export (`refuse_foreign_export`)."""
        if not self.enabled or stage != "fit" or not wandb_loggers(trainer):
            return
        self.own_dirs = own_checkpoint_dirs(trainer)
        self.run_dir = Path(trainer.default_root_dir).resolve()
        run_config = getattr(pl_module, "run_config", None) or {}  # lmtrain.train's config
        self.replace_others = run_config.get("overwrite_run") is True
        self.default_dir = (Path(trainer.default_root_dir) / "export").resolve()
        try:
            checked_out_dir(
                str(self.export_dir), str(last_checkpoint_path(trainer)), self.root_dir, True
            )
        except LMTrainError as err:
            raise LMTrainError(f"{KEY}: {err}{self.or_default()}") from None
        self.refuse_foreign_export()

    def or_default(self) -> str:
        """The way out of a refused export_dir that never clashes with another run: the default,
        in the run folder (unless that is the folder refused)."""
        if self.default_dir is None or self.export_dir.expanduser().resolve() == self.default_dir:
            return ""
        return f"; or leave {KEY} unset: its default is {self.default_dir}, in the run folder"

    def refuse_foreign_export(self) -> None:
        """Raise LMTrainError when export_dir holds an export that is not this run's (made from
        a checkpoint outside its checkpoint folders), unless overwrite_run=true: the export at
        the end would replace it, and it may be another run's only export. A folder of other
        files is checked_out_dir's to refuse; a missing or empty one is free."""
        folder = self.export_dir.expanduser().resolve()
        if self.replace_others or self.run_dir is None:
            return
        of = foreign_export(folder, self.own_dirs, self.run_dir)
        if of is None:
            return  # no export, or this run's own previous one: a resume replaces it
        raise LMTrainError(
            f"{KEY}={self.export_dir} holds another run's export ({of}), which this run's export "
            f"would replace: pass another {KEY}{self.or_default()}; or overwrite_run=true to "
            "replace it"
        )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = wandb_loggers(trainer)
        if not self.enabled or not trainer.is_global_zero or not loggers:
            return
        # Rank 0 only: there `experiment` is the wandb run (elsewhere, Lightning's dummy).
        loggers = [logger for logger in loggers if not logger.experiment.disabled]
        if not loggers:
            log.info(
                "wandb_model: W&B is disabled (WANDB_MODE=disabled): no model artifact and no "
                "export; export with `python -m lmtrain.export ckpt_path=<checkpoint> "
                "out_dir=<folder>`"
            )
            return
        source, alias = chosen_checkpoint(trainer)
        try:
            if source is None:
                raise FileNotFoundError("no checkpoint was saved (callbacks.model_checkpoint)")
            if is_sharded_checkpoint(source):
                raise ValueError(
                    f"{source} is sharded: merge it with `python -m lmtrain.strategies "
                    f"consolidate {source}` first"
                )
            self.log_export(loggers, source, alias, trainer.global_step)
        except Exception as err:  # training is over and saved: this never fails the run
            log.warning(
                "wandb_model: no model artifact (%s: %s); the checkpoints are saved: export one "
                "with `python -m lmtrain.export ckpt_path=<checkpoint> out_dir=<folder>` and log "
                "it with wandb.Artifact",
                type(err).__name__,
                err,
            )

    def log_export(self, loggers: list[WandbLogger], source: Path, alias: str, step: int) -> None:
        """Export `source` to export_dir (replacing the previous export of this run) and log it."""
        import wandb  # a WandbLogger is in use: wandb is installed

        self.refuse_foreign_export()  # another run may have exported there since setup
        target = self.export_dir.expanduser()
        # Into a folder found empty, no overwrite: export_checkpoint checks again right before
        # its rename, so another run's export made there meanwhile is refused, not replaced.
        replace = target.is_dir() and any(target.iterdir())
        folder = export_checkpoint(
            str(source),
            str(self.export_dir),
            root_dir=self.root_dir,
            overwrite=replace,  # only ever a previous export of this run's (refused otherwise)
            verify=self.verify,
            generation=self.generation,
        )
        info = json.loads((folder / EXPORT_META).read_text())["info"]
        metadata = {"checkpoint": source.name, **{k: v for k, v in info.items() if v is not None}}
        for logger in loggers:
            run = logger.experiment
            artifact = wandb.Artifact(f"model-{run.id}", type=ARTIFACT_TYPE, metadata=metadata)
            if self.copy_files:
                artifact.add_dir(str(folder), policy="mutable")
            else:
                referenced = linked_snapshot(folder, step, source) if run.offline else folder
                artifact.add_dir(str(referenced), policy="immutable")
            run.log_artifact(artifact, aliases=["latest", alias])
        log.info("Logged %s (%s checkpoint %s) as W&B artifact model-*", folder, alias, source)


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def chosen_checkpoint(trainer: L.Trainer) -> tuple[Path | None, str]:
    """The best checkpoint and the alias "best"; else the newest last.ckpt and "last"."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if best and Path(best).exists():
        return Path(best), "best"
    last = getattr(callback, "last_model_path", "") if callback else ""
    for path in (last, last_checkpoint_path(trainer)):
        if path and Path(path).exists():
            return Path(path), "last"
    return None, "last"


def linked_snapshot(folder: Path, step: int, source: Path) -> Path:
    """Hard links of `folder`'s files (copies where the file system has no links), in a new
    folder beside it that no export replaces: what an offline artifact references.

    A run resumed at its end exports the same checkpoint again. Each such snapshot was one more
    copy of the weights once the export was replaced: an earlier snapshot of the same checkpoint
    is referenced again when its other files are the same too; otherwise the export's weights,
    the same bytes, become links of that snapshot's (the card and lmtrain.json may differ: they
    gain the finished run's metrics)."""
    snapshots = folder.parent / f".{folder.name}-artifacts"
    made = export_signature(folder, source)
    same: list[tuple[Path, dict[str, Any]]] = []  # earlier snapshots of the same checkpoint
    for record in sorted(snapshots.glob("step-*.export")) if snapshots.is_dir() else []:
        earlier, signature = record.with_suffix(""), read_signature(record)
        if earlier.is_dir() and signature.get("checkpoint") == made["checkpoint"]:
            same.append((earlier, signature))
    for weights in made["weights"] if same else []:
        share_file(same[0][0] / weights, folder / weights)
    for earlier, signature in same:
        if signature == made:
            return earlier
    snapshot = snapshots / f"step-{step}"
    count = 1
    while snapshot.exists():  # the same step exported from another checkpoint or settings
        count += 1
        snapshot = snapshots / f"step-{step}.{count}"
    snapshots.mkdir(exist_ok=True)
    shutil.copytree(folder, snapshot, symlinks=True, copy_function=link_or_copy)
    write_json(snapshot.with_name(f"{snapshot.name}.export"), made)
    return snapshot


def read_signature(record: Path) -> dict[str, Any]:
    """A snapshot's record of what it was made from; empty when it cannot be read (damaged by
    hand or a full disk: then the snapshot is not reused, and the artifact is still logged)."""
    try:
        signature = json.loads(record.read_text())
    except (OSError, ValueError):
        return {}
    return signature if isinstance(signature, dict) else {}


def share_file(earlier: Path, current: Path) -> None:
    """Make `current` a hard link of `earlier` when their bytes are the same (atomically: a
    link made beside it, renamed over it); left as it is otherwise, or without hard links."""
    if not earlier.is_file() or earlier.samefile(current):
        return
    if not filecmp.cmp(earlier, current, shallow=False):
        return
    link = current.with_name(f".{current.name}.link-{os.getpid()}")
    try:
        os.link(earlier, link)
        os.replace(link, current)
    except OSError:
        link.unlink(missing_ok=True)


def export_signature(folder: Path, source: Path) -> dict[str, Any]:
    """What an export is made of: its checkpoint file (path, size, time written), which decides
    its weights, and the bytes of its other files."""
    written = source.stat()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    weights = [p for p in files if p.suffix in (".safetensors", ".bin")]
    return {
        "checkpoint": [str(source.resolve()), written.st_size, written.st_mtime_ns],
        "weights": sorted(str(p.relative_to(folder)) for p in weights),
        "files": {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files
            if p not in weights
        },
    }
