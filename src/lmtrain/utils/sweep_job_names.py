"""What a sweep's job is called in W&B, MLflow and TensorBoard: the overrides its sweep varies
(`model.optimizer.lr=0.001,seed=2`), grouped by its sweep folder.

While the job runs under Hydra's multirun, Hydra's config says what it is. A job continued later
in its own folder (`resume=<sweep>/<n>`, the documented way, or `ckpt_path=last
hydra.run.dir=<job folder>`) runs as a single run, whose Hydra config knows nothing of the
sweep: it was named after the task with no group, so `wandb sync` renamed and ungrouped the
job's W&B run, and its TensorBoard events went to `tensorboard/` instead of the job's own
`tensorboard/<job name>/` (one job shown as two runs). The job's own record still tells: the
`.hydra/hydra.yaml` Hydra saved in its folder, or the copy a resume kept of it in
`.hydra/previous/`, says MULTIRUN and holds the job's overrides, and the nearest folder above
with a `multirun.yaml` is its sweep's. Such a run is named and grouped as the job was.

A sampling sweeper (Optuna) may draw one point twice, which would give two jobs one name: its
jobs' names end with their job number, `model.optimizer.lr=0.001 (job 2)`. So do the names of a
sweep over a secret (`+extra.hf_token=a,b`): redacted, its values are one, `<redacted>`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from lmtrain.utils.redact import holds_secret, redact_override

# Where Hydra saves a run's config in its folder, and where a resume keeps the files it replaced
# (lmtrain.utils.run_record).
RECORD = ".hydra"
PREVIOUS = "previous"
# Hydra's grid sweeper: each job one point of the grid. Any other (Optuna) samples its points.
BASIC_SWEEPER = "BasicSweeper"


@dataclass(frozen=True)
class SweepJob:
    """What names one job of a sweep, from Hydra's config while it runs or its saved record."""

    overrides: tuple[str, ...]  # the job's own overrides (hydra.overrides.task)
    override_dirname: str  # Hydra's hydra.job.override_dirname
    num: int  # hydra.job.num
    params: tuple[str, ...]  # the keys of the sweeper's search space (hydra.sweeper.params)
    sampled: bool  # a sweeper that may draw one point twice
    sweep_dir: Path

    @classmethod
    def running(cls, hydra: Any) -> SweepJob:
        """The job Hydra is running now (`hydra`: its config, HydraConfig.get())."""
        sweeper = hydra.sweeper
        return cls(
            overrides=tuple(map(str, hydra.overrides.task)),
            override_dirname=str(hydra.job.override_dirname),
            num=int(hydra.job.num),
            params=tuple(str(k) for k in (sweeper.get("params") or {})),
            sampled=BASIC_SWEEPER not in str(sweeper.get("_target_", "")),
            sweep_dir=Path(str(hydra.sweep.dir)),
        )

    def name(self, task_name: str) -> str:
        """The job's swept overrides as `key=value,key=value`.

        Only the keys the sweep varies name it: the overrides every job shares would make every
        name long and alike. Without a known sweep, all of the job's overrides (Hydra's
        override_dirname, less hydra.job.config.override_dirname.exclude_keys).
        """
        swept = [o for o in self.overrides if o.split("=", 1)[0].lstrip("+~") in self.swept_keys()]
        named = [redact_override(o) for o in swept]
        every = self.override_dirname
        if holds_secret(every):
            every = ""  # Hydra's joined string cannot be redacted item by item: not used
        name = ",".join(named) or every
        if not name:
            return f"{task_name}-{self.num}"
        # A redacted value no longer tells the jobs apart: every job's reads `<redacted>`.
        redacted = named != swept
        return f"{name} (job {self.num})" if self.sampled or redacted else name

    def group(self, task_name: str) -> str:
        return f"{task_name}/{self.sweep_dir.name}"

    def swept_keys(self) -> set[str]:
        """Keys the sweep varies: an Optuna search space (hydra.sweeper.params) less the keys
        the sweep's command line fixes, which the sweepers leave out of it
        (`model.config.n_embd=32` with the generic space), and the sweep overrides
        (`lr=1e-3,3e-4`). The command line is the sweep's, saved in <sweep folder>/multirun.yaml
        (by Hydra's basic sweeper, and by SweepOutcome for others): a job's own overrides hold
        every key of the space as a fixed value."""
        keys = set(self.params)
        saved = self.sweep_dir / "multirun.yaml"
        if saved.is_file():
            from hydra.core.override_parser.overrides_parser import OverridesParser

            try:
                lines = [str(o) for o in OmegaConf.load(saved).hydra.overrides.task]
                parsed = OverridesParser.create().parse_overrides(lines)
            except Exception:  # not Hydra's record (a file of that name above the job folder)
                return keys
            keys -= {o.key_or_group for o in parsed if not o.is_sweep_override()}
            keys |= {o.key_or_group for o in parsed if o.is_sweep_override()}
        return keys


def job_name(hydra: Any, task_name: str) -> str:
    """The name of the multirun job Hydra is running (`hydra`: its config)."""
    return SweepJob.running(hydra).name(task_name)


def sweep_job(run_cfg: DictConfig) -> tuple[str, str] | None:
    """(name, group) of a multirun job, as W&B, MLflow and TensorBoard have them: of the job
    Hydra runs now, or of the sweep job whose folder this run continues; None for a run that
    is no sweep's job."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        job: SweepJob | None = SweepJob.running(hydra)
    else:
        output_dir = OmegaConf.select(run_cfg, "paths.output_dir")
        job = saved_sweep_job(Path(str(output_dir))) if output_dir is not None else None
    if job is None:
        return None
    return job.name(run_cfg.task_name), job.group(run_cfg.task_name)


def saved_sweep_job(run_dir: Path) -> SweepJob | None:
    """The sweep job whose folder `run_dir` is, by the newest record in it that Hydra saved
    in a multirun (its `.hydra/hydra.yaml`, or one a resume kept in `.hydra/previous/<time>/`);
    None when no record says MULTIRUN."""
    record = run_dir / RECORD
    kept = sorted(record.glob(f"{PREVIOUS}/*/hydra.yaml"), reverse=True)  # <time>: newest first
    for path in (record / "hydra.yaml", *kept):
        hydra = read_hydra(path)
        if hydra is not None and hydra.get("mode") == RunMode.MULTIRUN.name:
            return saved_job(hydra, sweep_folder(run_dir))
    return None


def read_hydra(path: Path) -> Mapping[str, Any] | None:
    """The `hydra` node of a saved hydra.yaml, as plain values (its `${...}` left unresolved:
    the sweep folder's default holds `${now:...}`); None where it cannot be read."""
    try:
        hydra = yaml.safe_load(path.read_text(errors="replace")).get("hydra")
    except (OSError, ValueError, yaml.YAMLError, AttributeError):
        return None
    return hydra if isinstance(hydra, Mapping) else None


def saved_job(hydra: Mapping[str, Any], sweep_dir: Path) -> SweepJob | None:
    """The job a saved `hydra` node describes, or None where it does not hold what names one
    (a record from elsewhere, or edited)."""
    job, overrides, sweeper = hydra.get("job"), hydra.get("overrides"), hydra.get("sweeper")
    if not all(isinstance(node, Mapping) for node in (job, overrides, sweeper)):
        return None
    task, num = overrides.get("task"), job.get("num")
    params = sweeper.get("params") or {}
    if not isinstance(task, list) or not isinstance(num, int) or isinstance(num, bool):
        return None
    if not isinstance(params, Mapping):
        return None
    return SweepJob(
        overrides=tuple(map(str, task)),
        override_dirname=str(job.get("override_dirname") or ""),
        num=num,
        params=tuple(map(str, params)),
        sampled=BASIC_SWEEPER not in str(sweeper.get("_target_", "")),
        sweep_dir=sweep_dir,
    )


def sweep_folder(run_dir: Path) -> Path:
    """The sweep folder of the job folder `run_dir`: the nearest folder above it with the
    sweep's `multirun.yaml` (the job folder may be several levels down, by hydra.sweep.subdir),
    else the folder it is in. Its saved hydra.sweep.dir may be `${...}` of the task's config."""
    folder = run_dir.resolve()
    for parent in folder.parents:
        if (parent / "multirun.yaml").is_file():
            return parent
    return folder.parent
