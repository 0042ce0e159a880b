"""A CSV logger whose `metrics.csv` survives a resume: the whole run's history in one file.

Lightning's `CSVLogger` deletes `<log_dir>/metrics.csv` when its writer starts in a folder that
has one, and `configs/logger/csv.yaml` gives every run one folder (`<run folder>/csv/`), so a
resumed run (`resume=`, `ckpt_path=last`) would lose every row logged before the resume. Here
the file is moved aside first (`metrics.csv.before-resume`, until its rows are safe in the new
file), and the resumed run's file starts with the rows the killed run wrote before it started
the batch the resumed run starts with (`CSVBatchStarts` finds which); the later rows were
logged after the checkpoint, and the resumed run logs them again, as an uninterrupted run
would. Neither the checkpoint nor the rows' steps can say where that is: a save may come before
its step's row (a preemption's, in the step's last hook) or after the next step's first row (the
scheduled last.ckpt, at the next batch's start), and the loggers' step axes differ. A run that
starts from no checkpoint keeps nothing, as Lightning's logger does.

Lightning has no option for this (its `CSVLogger` either deletes the file or starts a
`version_N` folder), hence the subclass; it uses only public API: the logger's `log_dir`,
`experiment`, `log_metrics`, `save` and `finalize`, and its writer's `log_metrics`, `save`,
`metrics`, `metrics_keys` and `metrics_file_path`.

Lightning's writer also rewrites the file in place (truncate, then write) when a row brings a
new column, so a kill in that moment loses the rows before it; `save` here widens the header
first with an atomic replace (`widen_header`). A refused write is one line (`CSVWriteRefused`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from typing_extensions import override

from lmtrain.errors import LMTrainError
from lmtrain.utils.checkpoint_io import resume_from
from lmtrain.utils.csv_rows import plain_row, read_rows, widen_header
from lmtrain.utils.io import atomic_write
from lmtrain.utils.task import refused_write, written_file

log = logging.getLogger(__name__)
ASIDE = "metrics.csv.before-resume"  # the earlier file, until its kept rows are written again
HPARAMS = "hparams.yaml"  # Lightning's CSV writer's file of the run's hyperparameters


class CSVWriteRefused(LMTrainError):
    """A file of the CSV logger's folder that its modes or its file system refused to write."""


class ResumableCSVLogger(CSVLogger):
    """Lightning's `CSVLogger`, keeping the earlier rows a resumed run does not log again."""

    def __init__(  # CSVLogger's arguments, named: a misspelled one is the caller's TypeError
        self,
        save_dir: str,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)
        self._aside = Path(self.log_dir) / ASIDE
        self._earlier_rows: list[tuple[int, dict[str, Any]]] | None = None
        self._moved = False  # the earlier file moved aside, and its rows read
        self._keep: int | None = None  # how many of them to keep (None: all), `CSVBatchStarts`
        self.rows_written = 0  # rows in the file so far (each is written when logged)
        self.training_started = False  # set by CSVBatchStarts: a batch began in this process
        self._hparams_before: str | None = None  # hparams.yaml as the earlier process left it
        # The kept rows of the step a run resumed in mid-step is in: the learning rates, logged
        # at the step's first micro-batch, are logged again (other loggers, TensorBoard after
        # its purge, need them), and the file keeps its row.
        self._in_flight: list[tuple[int, dict[str, Any]]] = []
        # The run's checkpoints (`CSVBatchStarts` knows where), for the line of a refused write.
        self.checkpoints = Path(self.log_dir).parent / "checkpoints"
        self.refused = False  # a write was refused, and its line raised

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One line for a write in the block that the modes or the file system refused, naming
        the file, and how to resume from the run's checkpoints once it is writable again."""
        try:
            yield
        except OSError as err:
            if (found := refused_write(err)) is None:
                raise
            self.refused, path = True, written_file(found)
            raise CSVWriteRefused(
                f"could not write {path} ({os.strerror(found.errno)}): make {path.parent} and "
                f"its files writable, then {resume_from(self.checkpoints)}; the rows written "
                "before it are kept"
            ) from None

    def _move_aside(self) -> None:
        """Move the earlier file aside just before the writer starts (it deletes the file), not
        when the logger is built: a run refused in between leaves the file where it was. It is
        removed once the rows it keeps are in the new file. One already aside is from a resume
        that got no further, and is still the whole history."""
        self._moved = True
        if rank_zero_only.rank != 0:
            return
        metrics_csv = Path(self.log_dir) / "metrics.csv"
        if metrics_csv.is_file() and not self._aside.is_file():
            metrics_csv.rename(self._aside)  # refused: the line of lmtrain.utils.task
        self._earlier_rows = read_rows(self._aside)

    def keep_rows(self, count: int | None) -> None:
        """Write the earlier file's first `count` rows (None: all) into this run's, now, ahead
        of any row of its own (so that `rows_written` counts them from here on)."""
        self._keep = count
        self._write_earlier_rows()

    @property
    @override
    def experiment(self) -> Any:
        if not self._moved:
            self._move_aside()
        with warnings.catch_warnings():
            if self._earlier_rows:  # Lightning warns they will be deleted; some may be kept
                warnings.filterwarnings("ignore", message="Experiment logs directory .* exists")
            return super().experiment

    @override
    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._write_earlier_rows()
        if self._in_flight:  # a run resumed in mid-step, until it logs a later step
            if (step, plain_row(metrics)) in self._in_flight:
                return  # logged again: the file has it
            if step is None or step > self._in_flight[0][0]:
                self._in_flight = []
        with self.writing():  # its save, every flush_logs_every_n_steps rows
            super().log_metrics(metrics, step)
        self.rows_written += 1

    @override
    @rank_zero_only
    def save(self) -> None:
        with self.writing():
            widen_header(self.experiment)  # Lightning's writer then only appends
            super().save()

    @override
    @rank_zero_only
    def log_hyperparams(self, params: Any = None, *args: Any, **kwargs: Any) -> None:
        """Lightning writes hparams.yaml at once; the earlier one is kept aside, for a resumed
        run refused before training starts (`finalize`)."""
        hparams = Path(self.log_dir) / HPARAMS
        if self._hparams_before is None and hparams.is_file():
            self._hparams_before = hparams.read_text()
        with self.writing():
            super().log_hyperparams(params, *args, **kwargs)

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        refused_before = self.refused  # that refusal's line is the run's error
        try:
            with self.writing():
                self._finalize(status)
        except CSVWriteRefused as refusal:
            if status == "success":
                raise
            # Lightning finalizes a run that failed: its own error says why, and goes on up.
            if not refused_before:
                log.warning("%s", refusal)

    def _finalize(self, status: str) -> None:
        self._write_earlier_rows()  # a run that logged nothing (killed, or nothing to train)
        super().finalize(status)
        if not self.training_started and self._hparams_before is not None:
            # Refused when its checkpoint was restored or at train start (or nothing left to
            # train): the run folder keeps the config the run trained with, as its .hydra/ does.
            with atomic_write(Path(self.log_dir) / HPARAMS) as f:
                f.write(self._hparams_before)

    def _write_earlier_rows(self) -> None:
        """Hand the kept rows to the writer, once, ahead of the run's own; then the file aside
        can go. Lightning's own `save` calls (the hyperparameters at fit start) come before
        `CSVBatchStarts` has said how many to keep, so they do not trigger this."""
        writer = self.experiment  # moves the earlier file aside and reads it, the first time
        if self._earlier_rows is None:
            return
        rows, self._earlier_rows = self._earlier_rows, None
        kept = rows[: self._keep]
        for step, row in kept:
            writer.log_metrics(row, step)
        last = max((step for step, _ in kept), default=None)
        self._in_flight = [(step, plain_row(row)) for step, row in kept if step == last]
        self.save()
        with self.writing():
            self._aside.unlink(missing_ok=True)
        self.rows_written += len(kept)
        if kept:
            log.info(
                "%s: kept the %d rows logged before the resumed batch", self.log_dir, len(kept)
            )
        elif rows:
            log.warning("%s: metrics.csv of an earlier run replaced", self.log_dir)


class CSVBatchStarts(Callback):
    """Tells `ResumableCSVLogger` how many of the file's rows a resumed run keeps: those written
    before the killed run started the batch the resumed run starts with.

    A checkpoint is saved after a batch, a validation, or at the next batch's start, before or
    after rows of the step it holds, so neither the rows nor their steps in the checkpoint say
    where the resumed run takes over. Hence `csv/batch_starts`: a line `<epoch> <batch>
    <rows written>` at the start of each training batch (a write of ~10 bytes; a kill loses
    no written line). The resumed run's first batch finds its line; a run killed before that
    batch keeps every row. First in the callback list, so that a batch start's own rows (the
    learning rate) count after its line.

    The final validation (`trainer.validate` after `fit`) starts with a line `final <rows
    written>`: a run killed in it resumes to train no batch, and keeps the rows before it.
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        ended: Callable[[Trainer], bool] | None = None,
    ) -> None:
        # The run folder, whose own checkpoints continue the file (None: the logger's parent).
        self.run_dir = Path(run_dir) if run_dir is not None else None
        # Whether a run resumed at its end had ended whole (its final validation reported): it
        # validates no more, and keeps every row. None: never.
        self.ended = ended
        self.logger: ResumableCSVLogger | None = None
        self.resumed = False  # a checkpoint was restored: the first batch decides what to keep
        self.trained = False  # on_train_start was called (not for a run resumed at its end)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # the final validation's setup keeps fit's logger
            found = [lg for lg in trainer.loggers if isinstance(lg, ResumableCSVLogger)]
            self.logger = found[0] if found and trainer.is_global_zero else None
            self.trained = False
            if self.logger is not None:  # what `ckpt_path=last` resumes from
                self.logger.checkpoints = Path(trainer.default_root_dir) / "checkpoints"

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.trained = True
        self.resumed = self.own_checkpoint(trainer)
        if self.logger is not None and not self.resumed:
            self.logger.keep_rows(0)  # a new run: as Lightning's logger, an earlier file goes
            with self.logger.writing():
                self.path.unlink(missing_ok=True)

    def own_checkpoint(self, trainer: Trainer) -> bool:
        """Resumed from this run's own checkpoint (in its folder, or in its checkpoint
        callback's dirpath): another run's (a new run started from its weights,
        overwrite_run=true) keeps nothing of the earlier file. The run folder is not the
        logger's parent when `logger.csv.save_dir` is set elsewhere. Asked once the checkpoint
        is restored: FSDP restores after `on_fit_start`."""
        ckpt = Path(trainer.ckpt_path).resolve() if trainer.ckpt_path else None
        dirpaths = [getattr(c, "dirpath", None) for c in trainer.checkpoint_callbacks]
        own = [Path(dirpath) for dirpath in dirpaths if dirpath]
        if self.run_dir is not None:
            own.append(self.run_dir)
        elif self.logger is not None:
            own.append(Path(self.logger.log_dir).parent)
        return ckpt is not None and any(f.resolve() in ckpt.parents for f in own)

    def on_train_batch_start(self, trainer: Trainer, pl_module: Any, batch: Any, idx: int) -> None:
        logger = self.logger
        if logger is None:
            return
        # Not at on_train_start, where later callbacks may still refuse the resume (ExactResume).
        logger.training_started = True
        here = (trainer.current_epoch, idx)
        if self.resumed:
            self.resumed = False
            lines = self.lines()
            at = [count for *batch, count in lines if tuple(batch) == here]
            logger.keep_rows(at[0] if at else None)  # None: killed before it, keep all
            with logger.writing(), atomic_write(self.path) as f:
                f.writelines(f"{e} {b} {n}\n" for e, b, n in lines if (e, b) < here)
        with logger.writing(), self.path.open("a") as f:
            f.write(f"{here[0]} {here[1]} {logger.rows_written}\n")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Resumed at the end of training, the run trained no batch (Lightning called no train
        # hook); decided before Lightning finalizes the logger, which would keep every row.
        if self.logger is None or self.trained or not self.own_checkpoint(trainer):
            return
        if self.ended is None or not self.ended(trainer):  # its final validation follows
            self.logger.keep_rows(self.final_line())  # None: killed before it, keep all

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.logger is not None and trainer.state.fn == TrainerFn.VALIDATING:  # the final
            with self.logger.writing(), self.path.open("a") as f:
                f.write(f"final {self.logger.rows_written}\n")

    def final_line(self) -> int | None:
        """The rows written before the first final validation began (None: it never began)."""
        text = self.path.read_text() if self.path.is_file() else ""
        lines = [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]
        found = [f[1] for f in lines if len(f) == 2 and f[0] == "final"]
        return int(found[0]) if found and found[0].isascii() and found[0].isdigit() else None

    @property
    def path(self) -> Path:
        assert self.logger is not None
        return Path(self.logger.log_dir) / "batch_starts"

    def lines(self) -> list[tuple[int, int, int]]:
        """(epoch, batch, rows written) of each whole line of `batch_starts` (none if missing)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        fields = [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]
        whole = [f for f in fields if len(f) == 3 and all(x.isascii() and x.isdigit() for x in f)]
        return [(int(e), int(b), int(n)) for e, b, n in whole]
