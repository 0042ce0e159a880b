"""lmtrain's `hydra/launcher=slurm` and `slurm_local`: hydra-submitit-launcher's launchers, whose
sweep waits for every job and outlives one killed outright (`lmtrain.utils.submitit_launcher`),
and whose command, stopped by SIGTERM, stops its local jobs (`lmtrain.utils.submitit_stop`).

Here, not in `lmtrain.utils`, because Hydra instantiates a launcher only from a class of the
`hydra_plugins` package that its plugin scan registered. Every Hydra command imports this module
in that scan, so it holds the classes only: the rest is imported when a sweep launches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin


class _WaitsForEveryJob(plugin.BaseSubmititLauncher):
    """The plugin's launcher (which submits every job), with a collection that waits for each
    job and scores one that left no result as failed rather than raising submitit's error."""

    # Set by `launch` in the launcher's process, pickled with it into every job: the file whose
    # presence (a SIGTERM stopped the command) makes `checkpoint` refuse the job's requeue.
    stop_marker: str | None = None

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lmtrain.utils.submitit_launcher import (
            jobs_that_always_return,
            stopped_by_ctrl_c,
            worst_value,
        )
        from lmtrain.utils.submitit_stop import SigtermStop, stop_marker

        assert self.config is not None
        worst = worst_value(self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if self.stop_marker is None:  # one per sweep: Optuna launches each batch of trials
            self.stop_marker = str(stop_marker(sweep_dir))
        stop = SigtermStop(sweep_dir, Path(self.stop_marker), local=self._EXECUTOR == "local")
        always = jobs_that_always_return(job_overrides, initial_job_idx, worst, stop)
        with stopped_by_ctrl_c(), stop.watching(), always:
            return super().launch(job_overrides, initial_job_idx)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """In the job, on the signal that requeues it: the plugin's requeue, unless the sweep's
        command was stopped by SIGTERM (its marker exists): then submitit's UncompletedJobError,
        its way of saying a job is not requeued (lmtrain.utils.requeue logs why)."""
        if self.stop_marker is not None and Path(self.stop_marker).exists():
            from submitit.core.utils import UncompletedJobError

            raise UncompletedJobError(
                "the sweep's command was stopped by SIGTERM: its jobs are not requeued"
            )
        return super().checkpoint(*args, **kwargs)


class LocalLauncher(_WaitsForEveryJob, plugin.LocalLauncher):
    """`hydra/launcher=slurm_local`: submitit's local executor."""


class SlurmLauncher(_WaitsForEveryJob, plugin.SlurmLauncher):
    """`hydra/launcher=slurm`: sbatch (the name `slurm_launcher_checks` looks for)."""
