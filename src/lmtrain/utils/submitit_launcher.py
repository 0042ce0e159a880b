"""How `hydra/launcher=slurm` and `slurm_local` collect their jobs' results: every job waited
for, and one that left no result scored as failed. The launchers themselves, subclasses of
hydra-submitit-launcher's, are `hydra_plugins.lmtrain_submitit_launcher` (Hydra instantiates
launchers from the `hydra_plugins` package only); they call `jobs_that_always_return`.

The plugin submits a sweep's jobs, then collects each one's result in turn
(`[j.results()[0] for j in jobs]` in `BaseSubmititLauncher.launch`). A job that left no result
(killed outright: SIGKILL, the OOM killer, scancel, a node that died; or one that raised outside
Hydra's job runner) makes submitit raise `UncompletedJobError` / `FailedJobError` there, so the
sweep ended with submitit's traceback while its other jobs still ran, `SweepOutcome` never judged
it (no one-line error, the sweep folder's lock let go under live jobs), and an Optuna study lost
its remaining trials (red team). Here the plugin still submits every job; only the collection
differs: each job is waited for, and one without a result scores the worst value for the
sweeper's direction, as a job that fails inside `run_for_sweeper` does (not a FAILED JobReturn:
Hydra's basic sweeper re-raises that, and Optuna's, with lmtrain's max_failure_rate of 0, ends
the study). `SweepOutcome` then counts the job as failed (its folder has no metrics.json) and
ends the sweep with its one line and exit 1, after every job has run.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import submitit
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig
from submitit.core.utils import FailedJobError, UncompletedJobError

from lmtrain.utils.submitit_stop import SigtermStop
from lmtrain.utils.sweep_jobs import sweep_direction
from lmtrain.utils.task import INTERRUPTED_EXIT_CODE

log = logging.getLogger(__name__)


def worst_value(config: DictConfig) -> float:
    """+inf, or -inf under `hydra.sweeper.direction=maximize`: what `launch.worst_value` gives a
    failed job, read here from the sweep's config (the launcher's process sets no HydraConfig)."""
    direction = config.hydra.sweeper.get("direction")
    return -math.inf if sweep_direction(direction) == "maximize" else math.inf


@contextmanager
def stopped_by_ctrl_c() -> Iterator[None]:
    """Ctrl-C while the launcher waits for its jobs ends the sweep as it ends a run: `interrupted`
    and exit 130 (`utils/task.py`), not submitit's traceback from its wait and exit 1. Local jobs
    (`slurm_local`) got the terminal's Ctrl-C too and stop themselves; jobs submitted to SLURM
    run on (`scancel` stops them), as with submitit's own launcher."""
    try:
        yield
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None


@contextmanager
def jobs_that_always_return(
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    worst: float,
    stop: SigtermStop | None = None,
) -> Iterator[None]:
    """While inside, the plugin's `submitit.AutoExecutor` hands back `PatientJob`s, each noted
    in `stop` (which stops them on a SIGTERM to the launcher) as it is submitted.

    Written by hand: the plugin's `launch` builds its executor and collects the results in one
    method, with no hook between, and copying the method would fork its submission code; so
    its executor class is swapped for one whose `map_array` wraps the jobs, for the duration of
    the call (the launcher's process submits from one thread).
    """
    original = submitit.AutoExecutor

    class Executor(original):  # type: ignore[misc, valid-type]
        def map_array(self, fn: Any, *iterable: Any) -> list[PatientJob]:
            with stop.submitting() if stop is not None else nullcontext():
                jobs = super().map_array(fn, *iterable)
                if stop is not None:
                    stop.jobs += [(initial_job_idx + i, job) for i, job in enumerate(jobs)]
            return [
                PatientJob(job, initial_job_idx + i, job_overrides[i], worst)
                for i, job in enumerate(jobs)
            ]

    submitit.AutoExecutor = Executor
    try:
        yield
    finally:
        submitit.AutoExecutor = original


class PatientJob:
    """A submitted job whose `results()` waits for it and always gives a JobReturn."""

    def __init__(self, job: submitit.Job, num: int, overrides: Sequence[str], worst: float) -> None:
        self.job, self.num, self.overrides, self.worst = job, num, list(overrides), worst

    def results(self) -> list[JobReturn]:
        """The job's own results, or (it left none) one that scores `worst`."""
        try:
            return self.job.results()
        except (UncompletedJobError, FailedJobError) as err:
            why = "it raised outside Hydra's job" if isinstance(err, FailedJobError) else "killed?"
            # Its overrides are in the launcher's "#<num> : ..." line above.
            log.error(
                "Job %d left no result (%s; submitit's state: %s): it counts as failed and the "
                "sweep goes on; its output is in %s",
                self.num,
                why,
                self.job.state,
                self.job.paths.stderr,
            )
            scored = JobReturn(overrides=self.overrides, status=JobStatus.COMPLETED)
            scored.return_value = self.worst
            return [scored]
