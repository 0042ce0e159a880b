"""One test per use of Lightning's private API (lmtrain.lightning_compat), on real objects.

When a Lightning upgrade renames or changes one of them, the test of that function fails here,
naming the one place to mend.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import ClassVar

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.strategies.launchers import subprocess_script

from lmtrain import lightning_compat as compat
from tests.test_slurm_auto_requeue import SLURM_JOB


def tiny_trainer(**kwargs: object) -> L.Trainer:
    defaults = {
        "accelerator": "cpu",
        "max_steps": 4,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**{**defaults, **kwargs})


class Record(L.Callback):
    def __init__(self) -> None:
        self.accumulating: list[bool] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.accumulating.append(compat.accumulating(trainer))


def test_accumulating_is_true_between_micro_batches_of_a_step() -> None:
    record = Record()
    tiny_trainer(accumulate_grad_batches=2, callbacks=[record]).fit(BoringModel())
    assert record.accumulating == [True, False] * 4


class ValidationPlaces(L.Callback):
    """The training batches (epoch, index) that a validation followed; with `probe`, also those
    `validation_follows` named, asked twice from on_train_batch_end."""

    def __init__(self, probe: bool) -> None:
        self.probe, self.named, self.followed = probe, [], []
        self.batch: tuple[int, int] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.batch = (trainer.current_epoch, args[-1])
        if self.probe and compat.validation_follows(trainer):
            assert compat.validation_follows(trainer)  # asking changes nothing
            self.named.append(self.batch)

    def on_validation_start(self, trainer: L.Trainer, *args: object) -> None:
        self.followed.append(self.batch)


@pytest.mark.parametrize(
    "schedule",
    [
        {"val_check_interval": 3, "check_val_every_n_epoch": None},  # across epochs, mid-step
        {"val_check_interval": 1.0, "check_val_every_n_epoch": 2},  # every 2nd epoch's end
    ],
)
def test_validation_follows_names_the_batches_a_validation_follows(schedule: dict) -> None:
    """Epochs of 5 batches, 2 per optimizer step; the probe itself moves no validation."""
    places = {}
    for probe in (False, True):
        places[probe] = ValidationPlaces(probe)
        trainer = tiny_trainer(
            max_steps=12,
            accumulate_grad_batches=2,
            limit_train_batches=5,
            limit_val_batches=1,
            num_sanity_val_steps=0,
            callbacks=[places[probe]],
            **schedule,
        )
        trainer.fit(BoringModel())
    assert places[True].followed == places[False].followed
    assert places[True].named == places[True].followed
    assert len(places[True].followed) >= 2


@pytest.mark.parametrize(("max_epochs", "description"), [(-1, "Epoch 0"), (3, "Epoch 0/2")])
def test_the_rich_bar_reads_no_negative_epoch_limit(max_epochs: int, description: str) -> None:
    bar = compat.StepsRichProgressBar()
    trainer = tiny_trainer(
        max_epochs=max_epochs, enable_progress_bar=True, callbacks=[bar], limit_val_batches=0
    )
    trainer.fit(BoringModel())
    assert [task.description.strip() for task in bar.progress.tasks] == [description]


def test_cluster_environment_is_the_one_lightning_chose(monkeypatch) -> None:
    assert isinstance(compat.cluster_environment(tiny_trainer()), ClusterEnvironment)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "job")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    assert isinstance(compat.cluster_environment(tiny_trainer()), SLURMEnvironment)


def test_consolidated_checkpoint_has_the_layout_of_a_full_one() -> None:
    weights, optimizer = {"w": torch.ones(2)}, {"state": {}, "param_groups": []}
    checkpoint = {"model": weights, "optimizer_0": optimizer, "global_step": 3}
    assert compat.format_consolidated_checkpoint(checkpoint) == {
        "state_dict": weights,
        "optimizer_states": [optimizer],
        "global_step": 3,
    }


def test_a_dying_rank_ends_the_other_ranks_but_not_this_process() -> None:
    original = subprocess_script._launch_process_observer
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    start = time.monotonic()
    with compat.ddp_launcher_observes(job_only=True):
        assert subprocess_script._launch_process_observer is not original
        subprocess_script._launch_process_observer([failing, sleeper])
        while sleeper.poll() is None and time.monotonic() - start < 30:
            time.sleep(0.1)
    assert subprocess_script._launch_process_observer is original
    assert failing.returncode == 3 and sleeper.returncode is not None and sleeper.returncode < 0
    os.kill(os.getpid(), 0)  # still alive: Lightning's own observer would have killed it


def test_outside_a_sweep_a_dying_rank_ends_this_process_as_lightning_has_it() -> None:
    script = (
        "import subprocess, sys, time\n"
        "from lightning.pytorch.strategies.launchers import subprocess_script\n"
        "from lmtrain.lightning_compat import ddp_launcher_observes\n"
        "failing = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])\n"
        "with ddp_launcher_observes(job_only=False):\n"
        "    subprocess_script._launch_process_observer([failing])\n"
        "    time.sleep(60)\n"
    )
    ended = subprocess.run([sys.executable, "-c", script], timeout=50, capture_output=True)
    assert ended.returncode == -signal.SIGKILL, ended.stderr.decode()[-2000:]


def test_this_process_leaves_the_launcher_only_after_its_ranks_ended(tmp_path: Path) -> None:
    """A rank > 0 dies with rank 0 (lmtrain.utils.parent_death): one that is still saying why
    it stopped must be waited for, and its exit code, now 1, must not kill this process."""
    said = tmp_path / "said"
    late = f"import time, sys; time.sleep(2); open({str(said)!r}, 'w').write('x'); sys.exit(1)"
    rank = subprocess.Popen([sys.executable, "-c", late])
    with compat.ddp_launcher_observes(job_only=False):
        subprocess_script._launch_process_observer([rank])
    assert rank.returncode == 1 and said.read_text() == "x"
    time.sleep(6)  # the observer's period (5 s): it would have killed this process by now
    os.kill(os.getpid(), 0)


def test_every_rank_of_a_model_parallel_strategy_becomes_data_parallel(monkeypatch) -> None:
    """Lightning builds its device mesh from the data-parallel size in setup_environment; a
    world of 1 here (2 processes: tests/test_fsdp2.py, where the mesh shards over both)."""
    import socket

    import torch.distributed as dist
    from lightning.pytorch.strategies import ModelParallelStrategy

    with socket.socket() as sock:  # the process group's address, unset again after the test
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("MASTER_PORT", str(sock.getsockname()[1]))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")

    trainer = tiny_trainer(strategy=ModelParallelStrategy(tensor_parallel_size=1), devices=1)
    strategy = trainer.strategy
    strategy.num_nodes = 3  # what Lightning's "auto" would make the data-parallel size
    compat.make_every_rank_data_parallel(strategy)
    assert strategy._data_parallel_size == 3 * strategy.num_processes == 3
    strategy.num_nodes = 1
    compat.make_every_rank_data_parallel(strategy)
    strategy.connect(BoringModel())
    try:
        strategy.setup_environment()
        assert strategy.device_mesh.mesh_dim_names == ("data_parallel", "tensor_parallel")
        assert strategy.distributed_sampler_kwargs == {"num_replicas": 1, "rank": 0}
    finally:
        dist.destroy_process_group()


class LoggingModel(BoringModel):
    def training_step(self, batch: object, batch_idx: int) -> dict:
        out = super().training_step(batch, batch_idx)
        self.log("train/loss", out["loss"])
        return out


class Rows(L.pytorch.loggers.Logger):
    """A logger that keeps what Lightning sends it: (step, metric names)."""

    name, version = "rows", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, list[str]]] = []

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.rows.append((step, sorted(metrics)))

    def log_hyperparams(self, *args: object, **kwargs: object) -> None:
        pass


class StopAfterStep(L.Callback):
    """Logs the step that just ended and stops there, as the preemption callback does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            compat.log_finished_train_step(trainer)
            raise RuntimeError("stopped")


def test_a_run_stopped_in_on_train_batch_end_logs_that_step_as_lightning_would() -> None:
    uninterrupted, stopped = Rows(), Rows()
    tiny_trainer(logger=uninterrupted, log_every_n_steps=1).fit(LoggingModel())
    trainer = tiny_trainer(logger=stopped, log_every_n_steps=1, callbacks=[StopAfterStep(3)])
    with pytest.raises(RuntimeError, match="stopped"):
        trainer.fit(LoggingModel())
    # Steps 1, 2, 3 end: rows 0, 1, 2 (Lightning logs from 0), each as the full run has them.
    assert stopped.rows == uninterrupted.rows[:3]
    assert [step for step, _ in stopped.rows] == [0, 1, 2]
    assert stopped.rows[-1][1] == ["epoch", "train/loss"]


class LoggingValidationModel(LoggingModel):
    def validation_step(self, batch: object, batch_idx: int) -> None:
        self.log("val/loss", self.step(batch))


class SaveBeforeValidationAndStop(L.Callback):
    """At step `step` (a validation follows it): saves `path` marked as `mark_validation_pending`
    marks it, and stops, before that validation, as the preemption callback does."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path, self.saving = step, path, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            assert compat.validation_follows(trainer)
            self.saving = True
            trainer.save_checkpoint(self.path)
            compat.log_finished_train_step(trainer)
            raise RuntimeError("stopped")

    def on_save_checkpoint(self, trainer: L.Trainer, module: object, checkpoint: dict) -> None:
        if self.saving:
            compat.mark_validation_pending(checkpoint)


def test_a_run_resumed_from_a_save_marked_validation_pending_runs_that_validation(
    tmp_path,
) -> None:
    """The rows (steps and metrics) of a run stopped before its step-4 validation and resumed
    are those of an uninterrupted run: the validation runs first, at the step it was due."""
    path = str(tmp_path / "stopped.ckpt")
    schedule = {"val_check_interval": 2}
    stop = {"callbacks": [SaveBeforeValidationAndStop(4, path)]}
    uninterrupted, stopped, resumed = stop_and_resume(
        LoggingValidationModel(), path, schedule, stop
    )
    assert stopped + resumed == uninterrupted
    assert resumed[0][1] == ["epoch", "val/loss"]  # the resumed run validates first


def stop_and_resume(
    stopping: L.LightningModule, path: str, schedule: dict, stop: dict | None = None
) -> tuple[list, list, list]:
    """The rows of an uninterrupted 6-step run, of one that `stopping` (with `stop`'s trainer
    arguments) stops after saving `path`, and of its resume from there."""
    schedule = {"max_steps": 6, "limit_val_batches": 1, "log_every_n_steps": 1, **schedule}
    uninterrupted, stopped, resumed = Rows(), Rows(), Rows()
    tiny_trainer(logger=uninterrupted, **schedule).fit(LoggingValidationModel())
    with pytest.raises(RuntimeError, match="stopped"):
        tiny_trainer(logger=stopped, **schedule, **(stop or {})).fit(stopping)
    tiny_trainer(logger=resumed, **schedule).fit(LoggingValidationModel(), ckpt_path=path)
    return uninterrupted.rows, stopped.rows, resumed.rows


class SaveAfterStepEndAndStop(L.Callback):
    """Takes the loop's counters at step `step`'s end, saves `path` with them at the next hook
    (the next batch's start, or the epoch's end), as StepScheduledCheckpoint writes its
    scheduled last.ckpt, and stops there, as a kill right after the save would."""

    def __init__(self, step: int, path: str) -> None:
        self.step, self.path, self.counters = step, path, None

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step and not compat.accumulating(trainer):
            self.counters = compat.step_end_counters(trainer)

    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        self.save_and_stop(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, *args: object) -> None:
        self.save_and_stop(trainer)

    def save_and_stop(self, trainer: L.Trainer) -> None:
        if self.counters is not None:
            with compat.saving_as_at_step_end(trainer, self.counters):
                trainer.save_checkpoint(self.path)
            raise RuntimeError("stopped")


@pytest.mark.parametrize("step", [2, 3])
def test_a_run_resumed_from_a_save_after_its_step_end_logs_as_uninterrupted(
    tmp_path, step: int
) -> None:
    """Epochs of 5 micro-batches, 2 a step (steps of 2, 2, 1), a validation every 3: saved
    after step 2 (at the next batch's start) or step 3 (at its epoch's end), once Lightning
    has sent the step's row, then stopped and resumed: the same rows at the same steps,
    validations after the same micro-batches."""
    path = str(tmp_path / "stopped.ckpt")
    schedule = {"accumulate_grad_batches": 2, "val_check_interval": 3, "limit_train_batches": 5}
    stop = {"callbacks": [SaveAfterStepEndAndStop(step, path)]}
    uninterrupted, stopped, resumed = stop_and_resume(
        LoggingValidationModel(), path, schedule, stop
    )
    assert stopped + resumed == uninterrupted
    assert stopped[-1] == (step - 1, ["epoch", "train/loss"])  # sent before the save


def test_a_checkpoint_outside_dirpath_is_never_removed_whatever_its_path_says(tmp_path) -> None:
    """Lightning's own test keeps `..` (`Path.absolute()`): `<dirpath>/../../x` counts as a
    file in dirpath, and a crafted callback state made a resumed run delete it."""
    dirpath = tmp_path / "run" / "checkpoints"
    dirpath.mkdir(parents=True)
    trainer = tiny_trainer()
    current = str(dirpath / "last.ckpt")
    escape = f"{dirpath}/../../victim.txt"
    link = dirpath / "best-v1.ckpt"
    link.symlink_to(tmp_path / "victim.txt")
    assert ModelCheckpoint(dirpath=dirpath)._should_remove_checkpoint(trainer, escape, current)
    contained = compat.ContainedCheckpoint(dirpath=dirpath)
    assert not contained._should_remove_checkpoint(trainer, escape, current)
    assert not contained._should_remove_checkpoint(trainer, str(link), current)
    assert not contained._should_remove_checkpoint(trainer, str(tmp_path / "x.ckpt"), current)
    assert contained._should_remove_checkpoint(trainer, str(dirpath / "best.ckpt"), current)
    assert contained._should_remove_checkpoint(trainer, f"{dirpath}/../checkpoints/a.ckpt", current)
    assert not contained._should_remove_checkpoint(trainer, current, current)  # Lightning's rule


class StatefulLoader(torch.utils.data.DataLoader):
    """A train loader that records the state Lightning hands it back on resume."""

    loaded: ClassVar[list[dict]] = []

    def state_dict(self) -> dict:
        return {"saved": True}

    def load_state_dict(self, state: dict) -> None:
        StatefulLoader.loaded.append(state)


class EpochBoundModel(BoringModel):
    """Asks for its schedule's length, as CausalLMModule does, and loads the loader states."""

    def train_dataloader(self) -> StatefulLoader:
        return StatefulLoader(torch.randn(8, 32), batch_size=2)

    def configure_optimizers(self):
        assert self.trainer.estimated_stepping_batches > 0  # builds the train iterator now
        return super().configure_optimizers()

    def on_train_start(self) -> None:
        compat.load_train_loader_states(self.trainer)


def test_the_train_loader_states_load_when_the_iterator_was_built_before_the_restore(
    tmp_path,
) -> None:
    saves = ModelCheckpoint(tmp_path, every_n_train_steps=2, save_top_k=-1)
    run = tiny_trainer(
        max_steps=-1,
        max_epochs=1,
        limit_val_batches=0,
        callbacks=[saves],
        enable_checkpointing=True,
    )
    run.fit(EpochBoundModel())
    (half,) = tmp_path.glob("*step=2.ckpt")  # 2 of the epoch's 4 batches
    StatefulLoader.loaded.clear()
    resumed = tiny_trainer(max_steps=-1, max_epochs=1, limit_val_batches=0)
    resumed.fit(EpochBoundModel(), ckpt_path=half)
    assert StatefulLoader.loaded == [{"saved": True}]  # without the call: never loaded
    assert not resumed.fit_loop._combined_loader_states_to_load


def test_the_rich_bar_ends_full_under_accumulation_and_after_a_resume(tmp_path) -> None:
    """Lightning's total is the optimizer steps left, its count the micro-batches of the run so
    far: 12/6 under accumulation of 2, and 6/3 after resuming at step 3 (seen 20/10)."""
    ckpt = tmp_path / "step3.ckpt"
    for max_steps, resume in ((3, None), (6, ckpt)):
        bar = compat.StepsRichProgressBar()
        trainer = tiny_trainer(
            max_epochs=-1,
            max_steps=max_steps,
            accumulate_grad_batches=2,
            enable_progress_bar=True,
            callbacks=[bar],
            limit_val_batches=0,
        )
        trainer.fit(BoringModel(), ckpt_path=resume)
        (task,) = bar.progress.tasks
        assert task.completed == task.total == max_steps * 2, (task.completed, task.total)
        if resume is None:
            trainer.save_checkpoint(ckpt)


def test_validate_under_slurm_keeps_the_weights_in_memory(tmp_path, monkeypatch) -> None:
    """Lightning's own lookup loads the newest hpc_ckpt for any fit or validate without a
    ckpt_path under SLURM; with `resume_only_from_given_checkpoints`, None means the model."""
    for name, value in SLURM_JOB.items():  # one srun task
        monkeypatch.setenv(name, value)
    stale = BoringModel()
    torch.nn.init.zeros_(stale.layer.weight)
    saver = tiny_trainer(default_root_dir=tmp_path)
    saver.strategy.connect(stale)
    saver.save_checkpoint(tmp_path / "hpc_ckpt_1.ckpt")

    def weights_after_validate(guarded: bool) -> torch.Tensor:
        model = BoringModel()
        trainer = tiny_trainer(default_root_dir=tmp_path)
        if guarded:
            compat.resume_only_from_given_checkpoints(trainer)
        trainer.validate(model, verbose=False)
        return model.layer.weight.detach().clone()

    assert torch.count_nonzero(weights_after_validate(guarded=False)) == 0  # Lightning's pick
    assert torch.count_nonzero(weights_after_validate(guarded=True)) > 0


class SetLoggedStepsAtStart(L.Callback):
    def on_train_batch_start(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == 0:
            compat.set_logged_steps(trainer, 10)


def test_set_logged_steps_sets_the_step_of_every_later_row() -> None:
    rows = Rows()
    trainer = tiny_trainer(logger=rows, log_every_n_steps=1, callbacks=[SetLoggedStepsAtStart()])
    trainer.fit(LoggingModel())
    assert [step for step, _ in rows.rows] == [10, 11, 12, 13]


class ScheduledModel(LoggingValidationModel):
    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class LastStepLogs(L.Callback):
    """Makes the trainer's loggers also write after the last of `max_steps`, as lmtrain does
    (models.metrics.loggers_write_after), and counts the validations that run during fit."""

    def __init__(self) -> None:
        self.validations = 0

    def setup(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
        compat.write_logs_also_after(trainer, lambda t, step: step == t.max_steps)

    def on_validation_start(self, trainer: L.Trainer, *args: object) -> None:
        self.validations += not trainer.sanity_checking


@pytest.mark.parametrize(("max_steps", "every"), [(5, 2), (4, 2), (5, 0)])
def test_write_logs_also_after_adds_the_last_steps_row_once_and_no_validation(
    max_steps: int, every: int
) -> None:
    """The module's values and the LearningRateMonitor's reach the loggers after the last step,
    once; steps Lightning writes anyway are not written twice; no validation runs there; and
    `log_every_n_steps=0` still writes no training row."""
    plain, ours, last = Rows(), Rows(), LastStepLogs()
    settings = {"max_steps": max_steps, "log_every_n_steps": every, "val_check_interval": 2}
    lr = L.pytorch.callbacks.LearningRateMonitor
    tiny_trainer(logger=plain, **settings, callbacks=[lr()]).fit(ScheduledModel())
    tiny_trainer(logger=ours, **settings, callbacks=[lr(), last]).fit(ScheduledModel())

    def steps_of(rows: list, name: str) -> list[int]:
        return [step for step, names in rows if name in names]

    expected = {(5, 2): [1, 3, 4], (4, 2): [1, 3], (5, 0): []}[(max_steps, every)]
    assert steps_of(ours.rows, "train/loss") == expected
    assert steps_of(ours.rows, "lr-SGD") == expected
    lightnings = [s for s in expected if (s + 1) % every == 0]
    assert steps_of(plain.rows, "train/loss") == steps_of(plain.rows, "lr-SGD") == lightnings
    assert steps_of(ours.rows, "val/loss") == steps_of(plain.rows, "val/loss")
    assert last.validations == max_steps // 2


class StopsAfterStep(L.Callback):
    """Sets `should_stop` in on_train_batch_end of step `step`, as Lightning's Timer does."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        trainer.should_stop = trainer.should_stop or trainer.global_step == self.step


@pytest.mark.parametrize("names_the_stop", [False, True])
def test_write_logs_also_after_lets_steps_decide_a_stop_set_during_the_step(
    names_the_stop: bool,
) -> None:
    """Lightning writes a row when a callback stops the run in on_train_batch_end, of whatever
    the module logged last (a stale row where it did not log that step); with
    write_logs_also_after the stop step's row is written only where `steps` names it."""
    plain, ours = Rows(), Rows()
    settings = {"max_steps": 10, "log_every_n_steps": 2}
    tiny_trainer(logger=plain, **settings, callbacks=[StopsAfterStep(3)]).fit(LoggingModel())

    class Steps(L.Callback):
        def setup(self, trainer: L.Trainer, *args: object, **kwargs: object) -> None:
            compat.write_logs_also_after(trainer, lambda t, step: names_the_stop and step == 3)

    callbacks = [StopsAfterStep(3), Steps()]
    tiny_trainer(logger=ours, **settings, callbacks=callbacks).fit(LoggingModel())
    assert [step for step, _ in plain.rows] == [1, 2]  # Lightning's: the stop step's too
    assert [step for step, _ in ours.rows] == ([1, 2] if names_the_stop else [1])


def test_only_lightnings_leafspec_deprecation_is_ignored() -> None:
    """CombinedLoader's FutureWarning (printed at every run's fit) is ignored; torch's own
    deprecation of LeafSpec, raised from anywhere else, still shows."""
    from lightning.pytorch.utilities._pytree import _tree_flatten
    from torch.utils._pytree import LeafSpec

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what earlier tests showed is shown again
        compat.ignore_pytree_deprecation()
        _tree_flatten(1)  # a leaf: Lightning builds a LeafSpec
        assert [str(w.message) for w in caught] == []
        LeafSpec()
    assert [w.category for w in caught] == [FutureWarning], [str(w.message) for w in caught]


def test_an_unset_anonymous_is_left_out_of_a_wandb_loggers_init(tmp_path: Path) -> None:
    # Lightning passes anonymous=None to every wandb.init, and W&B warns of any value it is given
    # ("The anonymous setting has no effect", once a process: not asserted here).
    from lightning.pytorch.loggers import WandbLogger

    from lmtrain.lightning_compat.loggers import drop_unset_anonymous

    logger = WandbLogger(offline=True, save_dir=str(tmp_path))
    assert logger._wandb_init["anonymous"] is None  # what Lightning 2.6 passes
    drop_unset_anonymous(logger)
    assert "anonymous" not in logger._wandb_init
    chosen = WandbLogger(offline=True, save_dir=str(tmp_path), anonymous=True)
    drop_unset_anonymous(chosen)
    assert chosen._wandb_init["anonymous"] == "allow"  # set on purpose: kept
