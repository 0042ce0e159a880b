"""One TensorBoard run per run: a folder of its own, named as W&B names the run, that holds no other
run's events, and whose steps show once each across resumes.

A single run's events go to `<save_dir>/<name>/` itself; a multirun job's to
`<save_dir>/<name>/<job name>/` (its swept overrides), so that `tensorboard --logdir <sweep folder>`
lists each job by what it tried. TensorBoard shows every event file of a folder as one run, so:
- a new run whose folder outside its run folder already holds another run's events
  (`logger.tensorboard.save_dir` shared by two runs or sweeps, or by one sweep's jobs with a
  fixed `logger.tensorboard.version`) is refused in one line, as the CSV logger's is
  (`lmtrain.utils.outside_records`): the two runs' steps were one curve, and the later run's
  hparams.yaml replaced the earlier's;
- with `overwrite_run=true`, or in its own run folder (which its claim let it take: another run's
  with overwrite_run=true, or a run's that ended before its first checkpoint), the new run
  replaces them: its writer starts with a restart marker at step 0 (SummaryWriter's
  `purge_step`), which hides every earlier event of the folder; the files stay;
- training resumed in the run folder hides only the steps the resumed run logs again
  (`TensorBoardLogger`, `resumed`), unless the earlier session had ended there (its metrics.json
  reports the step it resumes at, and no session logged after it): its final validation stands,
  as in CSV, W&B and MLflow.

TensorBoard shows hyperparameters beside the metrics only for runs with an hparams summary, which
Lightning writes only with a placeholder metric (`hp_metric`, -1) that no other logger has. Here
the summary is written without it: TensorBoard's HParams tab then takes the metrics from the
scalars the run logs (train/loss, val/loss, ...), the same names in every logger.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.utils import get_class
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

from lmtrain.errors import LMTrainError
from lmtrain.utils.earlier_checkpoint import metrics_step, same_file
from lmtrain.utils.logger_names import flat_params, folder_name, sweep_job
from lmtrain.utils.outside_checkpoints import inside

log = logging.getLogger(__name__)

# What a TensorBoard run's folder holds: the writer's event files, and Lightning's hparams.yaml.
EVENT_FILES = "events.out.tfevents*"
HPARAMS = "hparams.yaml"


def is_tensorboard_entry(entry: DictConfig) -> bool:
    return str(entry.get("_target_", "")).endswith("TensorBoardLogger")


def is_ours(entry: DictConfig) -> bool:
    """Whether the entry makes lmtrain's TensorBoardLogger (under either module path: configs
    and saved run folders name `lmtrain.utils.logger_runs.TensorBoardLogger`), or a subclass."""
    try:
        return issubclass(get_class(str(entry.get("_target_"))), TensorBoardLogger)
    except Exception:  # a target that cannot be imported: instantiation says so in one line
        return False


def tensorboard_kwargs(entry: DictConfig, run_cfg: DictConfig, resuming: bool) -> dict[str, Any]:
    """A multirun job's TensorBoard folder named after its swept overrides (unless configured);
    a single run's is `<save_dir>/<name>/` itself. A new run into a folder with another run's
    events is refused, or with overwrite_run=true replaces them; resuming, lmtrain's logger hides
    the steps the resumed run logs again (see the module docstring)."""
    kwargs: dict[str, Any] = {}
    version = entry.get("version")
    if version is None:
        job = sweep_job(run_cfg)
        version = kwargs["version"] = folder_name(job[0]) if job is not None else ""
    log_dir = planned_log_dir(entry, version)
    if resuming and is_ours(entry):
        kwargs["resumed"] = True
        kwargs["ended_at"] = ended_step(Path(run_cfg.paths.output_dir), log_dir)
    earlier = earlier_run_file(log_dir) if log_dir is not None else None
    if resuming or earlier is None or rank_zero_only.rank != 0:  # other ranks write nothing
        return kwargs
    # In the run folder, the folder's claim (lmtrain.utils.run_folder) let this run replace what
    # is there: another run's files with overwrite_run=true, or a run's that ended before its
    # first checkpoint. Outside it, only overwrite_run=true replaces.
    own = Path(run_cfg.paths.output_dir)
    in_own = same_file(own, log_dir) or inside(own, log_dir)
    if not in_own and run_cfg.get("overwrite_run") is not True:
        refuse_other_run(entry, log_dir, earlier, "overwrite_run" in run_cfg)
    if "purge_step" not in entry:  # SummaryWriter's: its first file starts with the marker
        kwargs["purge_step"] = 0
        log.info("TensorBoard %s: hiding the events of the run this one replaces", log_dir)
    return kwargs


def ended_step(run_dir: Path, log_dir: Path | None) -> int | None:
    """The step the run folder's metrics.json reports the run ended at, unless a later session
    logged to `log_dir` after it was written (an event file named with a later time: a resume
    killed before its first checkpoint, whose steps the next resume logs again); else None."""
    step = metrics_step(run_dir)
    if step is None or log_dir is None:
        return step
    try:
        written = (run_dir / "metrics.json").stat().st_mtime
        names = [p.name for p in log_dir.glob(EVENT_FILES)]
    except OSError:
        return None
    # SummaryWriter names each file `events.out.tfevents.<seconds>.<host>.<pid>.<n>`.
    times = [(name.split(".") + [""] * 4)[3] for name in names]
    later = [t for t in times if not t.isdigit() or int(t) > written]
    return None if later else step


def planned_log_dir(entry: DictConfig, version: int | str) -> Path | None:
    """The folder Lightning's TensorBoardLogger will write this entry's events to, with `version`
    (its `log_dir`: `<save_dir>/<name>/<version>[/<sub_dir>]`); None without a save_dir."""
    save_dir = entry.get("save_dir")
    if save_dir is None:
        return None
    name = entry.get("name", "lightning_logs") or ""
    version = version if isinstance(version, str) else f"version_{version}"
    path = os.path.join(str(save_dir), str(name), version)
    sub_dir = entry.get("sub_dir")
    if isinstance(sub_dir, str):
        path = os.path.join(path, sub_dir)
    return Path(os.path.expanduser(os.path.expandvars(path)))


def earlier_run_file(log_dir: Path) -> Path | None:
    """An event file (or hparams.yaml) an earlier run left in `log_dir`, or None."""
    try:
        found = sorted(p for p in log_dir.glob(EVENT_FILES) if p.is_file())
    except OSError:  # a folder it cannot list: Lightning's writer says so at the first write
        return None
    hparams = log_dir / HPARAMS
    return found[0] if found else hparams if hparams.is_file() else None


def refuse_other_run(entry: DictConfig, log_dir: Path, earlier: Path, can_overwrite: bool) -> None:
    """One line for a new run whose TensorBoard folder holds `earlier`, another run's file."""
    prefix = f"logger.{entry._key()}"
    setting, keys = f"{prefix}.save_dir={entry.get('save_dir')}", f"{prefix}.save_dir"
    if entry.get("version") is not None:
        setting += f" with {prefix}.version={entry.get('version')}"
        keys += f" and {prefix}.version"
    or_overwrite = ", or overwrite_run=true to replace that run" if can_overwrite else ""
    raise LMTrainError(
        f"{setting} puts this run's TensorBoard events in {log_dir}, which already holds another "
        f"run's ({earlier.name}), shown with this one as one run: leave {keys} as configured "
        f"(the run folder), pass an empty folder{or_overwrite}"
    )


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger whose hyperparameters reach TensorBoard's HParams tab
    without the placeholder metric `hp_metric` (see the module docstring); `default_hp_metric`
    true brings Lightning's own summary, placeholder included, back.

    `resumed` (training resumed in the same folder): the steps the killed run logged after its
    checkpoint come again, so SummaryWriter's `purge_step` (a new event file whose restart marker
    hides every earlier event at step >= T) is set to T, the resumed run's first logged step: a
    run resumed at global step G logs from G (step k's loss, validation and learning rate are
    logged at k - 1). Under accumulation, a checkpoint between the micro-batches of step G + 1
    also hides the validation and learning rates logged at G before it. `ended_at`: the step the
    run folder's metrics.json reports; a session that had ended there (its final validation done,
    logged at G) logged nothing after its checkpoint, and resumed at G nothing is hidden.
    """

    def __init__(
        self,
        *args: Any,
        default_hp_metric: bool = False,
        resumed: bool = False,
        ended_at: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, default_hp_metric=default_hp_metric, **kwargs)
        self.placeholder_metric = default_hp_metric
        self.purge_at_first_step = self.resumed = resumed
        self.ended_at = ended_at
        self.session_start: Any = None  # the hparams summary, written with the first metrics

    @rank_zero_only
    def log_hyperparams(  # type: ignore[override]
        self,
        params: Mapping[str, Any],
        metrics: dict[str, Any] | None = None,
        step: int | None = None,
    ) -> None:
        super().log_hyperparams(params, metrics, step)  # kept for hparams.yaml
        if metrics is not None or self.placeholder_metric:
            return  # Lightning wrote the hparams summary with these metrics
        from torch.utils.tensorboard.summary import hparams

        flat = flat_params(params)
        plain = {k: v if isinstance(v, int | float | str) else str(v) for k, v in flat.items()}
        # Written with the first metrics, not now: a resume refused before its first batch
        # (ExactResume's check at train start) leaves no event file with the refused settings.
        _, self.session_start, _ = hparams(plain, {})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:  # type: ignore[override]
        purge = self.purge_at_first_step and step is not None
        if purge:
            self.purge_at_first_step = False
            if step == self.ended_at:
                purge = False
                log.info("TensorBoard %s: the earlier session ended at step %d", self.log_dir, step)
        if purge:
            writer = self.experiment
            writer.close()  # the next event opens a new file, which starts with the marker
            writer.purge_step = step
            log.info("TensorBoard %s: hiding the killed run's steps >= %d", self.log_dir, step)
        super().log_metrics(metrics, step)
        self.write_session_start()  # after the first metrics' restart marker: never hidden

    def write_session_start(self) -> None:
        """Write the pending hparams summary into the run's events, once."""
        if self.session_start is not None:
            self.experiment.file_writer.add_summary(self.session_start)
            self.session_start = None

    @rank_zero_only
    def finalize(self, status: str) -> None:
        # A new run that logged no metric still shows its hyperparameters; a resume that
        # trained nothing (an ended run) applied none of its settings, so writes none.
        if status == "success" and not self.resumed:
            self.write_session_start()
        super().finalize(status)
