"""A sweep's exit status: `SweepOutcome`, a Hydra callback.

Split from `lmtrain.utils.launch`, which runs each job: a failed job ends only itself
(`run_for_sweeper`), and this callback looks at the job folders once every job has run.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig, OmegaConf

from lmtrain.errors import LMTrainError
from lmtrain.utils.checks import strict_bool
from lmtrain.utils.locks import lock_folder
from lmtrain.utils.run_folder import refuse_other_sweeps_jobs
from lmtrain.utils.sweep_checks import (
    OPTUNA_RESULTS,
    file_stamp,
    refuse_sweep_that_cannot_start,
    sweep_files,
    withdraw_results_without_best,
)
from lmtrain.utils.sweep_ledger import end_ledger, folder_name, read_ledger, start_ledger
from lmtrain.utils.sweep_sigterm import hold_sigterm, note_job, release_sigterm, signals_held_off
from lmtrain.utils.task import fail

log = logging.getLogger(__name__)
_sweep_held: Callable[[], None] | None = None  # the unlock of this process's sweep folder


class SweepOutcome(HydraCallback):
    """Hydra callback: a sweep whose jobs failed exits 1 once every job has run.

    `run_for_sweeper` lets a failed job (a bad value, a crash, a rank that died) end only
    itself, so that the other jobs run; without this the sweep would then exit 0, and a script
    or CI would read success from a sweep in which no job ran. Each job that ends writes how in
    the sweep's ledger (`lmtrain.utils.sweep_ledger`, started here), with the reason of a
    failure, so that a job refused in a folder another job of the sweep filled counts too. A job
    killed outright writes no record: a job folder of this sweep (its `.hydra/config.yaml`
    written since the sweep started) without a record failed when it has no metrics.json of
    this sweep either. Files are told apart by their inode, size and mtime before the sweep,
    not by clocks, which differ between nodes. Any launcher: the sweep folder is read after the
    last job, not the launcher's results.
    """

    def __init__(self) -> None:
        self.before: dict[Path, tuple[int, int, int]] = {}

    def on_multirun_start(self, config: DictConfig, **_: object) -> None:
        # First: Hydra turns an error of a check below into a warning, and the sweep runs on.
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self.before = {path: file_stamp(path) for path in sweep_files(sweep_dir)}
        overwrite = strict_bool("overwrite_run", config.get("overwrite_run", False))
        try:
            refuse_sweep_that_cannot_start(config)
        except LMTrainError as err:
            fail(str(err))
        except Exception:  # a check that broke is Hydra's warning: the sweep runs
            self.claim(sweep_dir, overwrite)
            raise
        self.claim(sweep_dir, overwrite)
        self.save_command_line(config, sweep_dir)
        hold_sigterm(config)  # a SIGTERM between jobs ends the sweep as in one (sweep_sigterm)

    def on_job_start(self, config: DictConfig, **_: object) -> None:
        note_job(config)

    @staticmethod
    def claim(sweep_dir: Path, overwrite: bool) -> None:
        """The sweep folder locked for this sweep (one line if another live sweep holds it),
        and its ledger started."""
        try:
            claim_sweep_folder(sweep_dir.resolve(), overwrite)
        except LMTrainError as err:
            fail(str(err))
        start_ledger(sweep_dir)

    @staticmethod
    def save_command_line(config: DictConfig, sweep_dir: Path) -> None:
        """Save the sweep's config, with its command line, as Hydra's basic sweeper does
        (`multirun.yaml`), for the Optuna sweeper, which does not: each job names its W&B run
        by the keys the search varies (`lmtrain.utils.sweep_job_names.SweepJob.swept_keys`),
        and only the command line tells which keys of the search space it fixed."""
        if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
            with contextlib.suppress(OSError):  # a folder the jobs cannot write either
                OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def written_now(self, path: Path) -> bool:
        """Whether `path` was written since the sweep started."""
        return path.is_file() and file_stamp(path) != self.before.get(path)

    def withdraw_replaced_results(self, results: Path, config: DictConfig) -> None:
        """Remove an earlier sweep's Optuna results that this sweep did not rewrite. Only an
        `overwrite_run=true` sweep runs into a folder that holds them (`claim_sweep_folder`), and
        it says to replace that sweep's files: its jobs' records are replaced as the jobs write
        them, and the ledger leaves its other jobs out of the report; its best trial, kept, named
        parameters of jobs this sweep replaced (a grid sweep, or a search with no best)."""
        overwrite = strict_bool("overwrite_run", config.get("overwrite_run", False))
        if not overwrite or not results.is_file() or self.written_now(results):
            return
        try:
            results.unlink(missing_ok=True)
        except OSError as err:  # the sweep wrote its jobs there: a folder made read-only since
            print(f"warning: {results} (replaced) not removed: {err.strerror}", file=sys.stderr)
            return
        log.info("Removed %s, the best trial of the sweep this one replaced", results)

    def on_multirun_end(self, config: DictConfig, **_: object) -> None:
        release_sigterm()  # every job has run
        with signals_held_off(signal.SIGTERM):  # the sweep's end is recorded whole
            self.end_sweep(config)

    def end_sweep(self, config: DictConfig) -> None:
        release_sweep_folder()  # every job has run
        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = read_ledger(sweep_dir)
        recorded = {record.folder for record in records}
        folders = sorted(p.parent.parent for p in sweep_dir.glob("**/.hydra/config.yaml"))
        unrecorded = [
            folder
            for folder in folders
            if self.written_now(folder / ".hydra" / "config.yaml")
            and folder_name(folder, sweep_dir) not in recorded
        ]
        end_ledger(sweep_dir, sorted(recorded | {folder_name(f, sweep_dir) for f in unrecorded}))
        failed = [f"job {r.num} in {r.folder}: {r.why}" for r in records if not r.ok]
        failed += [
            f"{folder_name(folder, sweep_dir)}: no metrics.json (killed?)"
            for folder in unrecorded
            if not self.written_now(folder / "metrics.json")
        ]
        jobs = len(records) + len(unrecorded)
        results = sweep_dir / OPTUNA_RESULTS
        no_best = self.written_now(results) and withdraw_results_without_best(results)
        self.withdraw_replaced_results(results, config)
        if failed:
            log_name = f"{config.get('task_name', 'train')}.log"  # hydra/default.yaml's file
            print(
                f"error: {len(failed)} of {jobs} jobs of the sweep under {sweep_dir} failed ("
                + "; ".join(failed)
                + f"): see each one's log above or its {log_name}; "
                + (
                    "the other jobs' results are in their folders"
                    if len(failed) < jobs
                    else "no job has a result"
                )
                + (f" (no {OPTUNA_RESULTS}: no trial scored a finite value)" if no_best else ""),
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(1)
        if no_best:
            print(
                f"warning: no trial of the search scored a finite {config.get('optimized_metric')}"
                f" (all diverged), so {sweep_dir / OPTUNA_RESULTS} is not kept: see python -m "
                f"lmtrain.report {sweep_dir}",
                file=sys.stderr,
                flush=True,
            )


def claim_sweep_folder(sweep_dir: Path, overwrite: bool) -> None:
    """Lock `sweep_dir` for this sweep until it ends (`release_sweep_folder`), then refuse it if
    it holds another sweep's jobs. `ClaimRunFolder` checks that first, before anything is
    written; two sweeps started together both passed that check, and then wrote over each
    other's job records and ledger. Under the lock one goes on, and the other is refused."""
    global _sweep_held
    release_sweep_folder()
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _sweep_held = lock_folder(sweep_dir, "hydra.sweep.dir", what="sweep")
    except OSError as err:  # under a file, read-only: Hydra would only trace back
        raise LMTrainError(
            f"hydra.sweep.dir={sweep_dir} cannot be created or written ({err.strerror}): pass a "
            "writable hydra.sweep.dir"
        ) from None
    if not overwrite:
        try:
            refuse_other_sweeps_jobs(sweep_dir)
        except LMTrainError:
            release_sweep_folder()
            raise


def release_sweep_folder() -> None:
    """Let go of the sweep folder this process holds, if any."""
    global _sweep_held
    if _sweep_held is not None:
        _sweep_held()
        _sweep_held = None
