"""lmtrain's `hydra/launcher=slurm` and `slurm_local`: hydra-submitit-launcher's launchers, whose
sweep waits for every job and outlives one killed outright (`lmtrain.utils.submitit_launcher`).

Here, not in `lmtrain.utils`, because Hydra instantiates a launcher only from a class of the
`hydra_plugins` package that its plugin scan registered. Every Hydra command imports this module
in that scan, so it holds the classes only: the rest is imported when a sweep launches.
"""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher import submitit_launcher as plugin


class _WaitsForEveryJob(plugin.BaseSubmititLauncher):
    """The plugin's launcher (which submits every job), with a collection that waits for each
    job and scores one that left no result as failed rather than raising submitit's error."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from lmtrain.utils.submitit_launcher import (
            jobs_that_always_return,
            stopped_by_ctrl_c,
            worst_value,
        )

        assert self.config is not None
        worst = worst_value(self.config)
        with stopped_by_ctrl_c(), jobs_that_always_return(job_overrides, initial_job_idx, worst):
            return super().launch(job_overrides, initial_job_idx)


class LocalLauncher(_WaitsForEveryJob, plugin.LocalLauncher):
    """`hydra/launcher=slurm_local`: submitit's local executor."""


class SlurmLauncher(_WaitsForEveryJob, plugin.SlurmLauncher):
    """`hydra/launcher=slurm`: sbatch (the name `slurm_launcher_checks` looks for)."""
